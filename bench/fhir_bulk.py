"""Bulk Data export of ECG Observations from the FHIR test server (tests/servers/fhir): prints one JSON object.

    .venv/bin/python bench/fhir_bulk.py [--ecgs 500] [--fs-hz 500] [--duration-s 10] [--file-resources 100]

Seeds ``--ecgs`` ECG Observations and a fifth as many heart rates, then exports the ECGs
(``_type=Observation&_typeFilter=Observation?code=...``) and measures, on one machine (client and server share
its cores): kick-off to manifest (the server writes the NDJSON files; the client polls as ``Retry-After`` says,
1 s), the streamed download (MB/s), reading the files back and decoding each Observation into an ECG record, and
the whole path in ECG/s; then the same ECGs by the paged REST search (``pull_ecgs``, page 50) for comparison.
The server answers its status URL with the manifest as soon as the files are written (``--export-polls=0``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from fhir_test_server import fhir_test_server

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.fhir import (
    BulkExportRequest,
    EcgPullConfig,
    FhirClient,
    FhirConfig,
    PulledEcg,
    bulk,
    ecg_to_observation,
    pull_ecgs,
)
from integrations.fhir.pull import read_ecg_observation

ECG_SYSTEM, ECG_CODE = "urn:bench:ecg", "bulk"


def _record(index: int, fs_hz: float, duration_s: float) -> EcgRecord:
    rng = np.random.default_rng(index)
    signal_mv = np.cumsum(rng.normal(0.0, 0.02, (len(MODEL_LEAD_ORDER), round(fs_hz * duration_s))), axis=1)
    return EcgRecord(f"ecg-{index}", signal_mv, fs_hz, MODEL_LEAD_ORDER, acquired_at=datetime(2026, 11, 1, tzinfo=UTC))


def _seed(client: FhirClient, n_ecgs: int, fs_hz: float, duration_s: float) -> float:
    started = time.perf_counter()
    for i in range(n_ecgs):
        observation = ecg_to_observation(_record(i, fs_hz, duration_s), subject_reference=f"Patient/p{i % 50}")
        observation["code"] = {"coding": [{"system": ECG_SYSTEM, "code": ECG_CODE}]}
        client.create(observation)
        if i % 5 == 0:
            heart_rate = {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/p{i}"},
                          "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                          "valueQuantity": {"value": 70, "unit": "/min"}}  # fmt: skip
            client.create(heart_rate)
    return time.perf_counter() - started


def _bulk(client: FhirClient, dest: Path) -> dict[str, float | int]:
    request = BulkExportRequest(types=("Observation",), type_filters=(f"Observation?code={ECG_SYSTEM}|{ECG_CODE}",))
    sleeps_s: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps_s.append(seconds)
        time.sleep(seconds)

    started = time.perf_counter()
    status_url = bulk.kick_off(client, request)
    manifest = bulk.poll(client, status_url, sleep=sleep)
    exported = time.perf_counter()
    downloaded = bulk.download(client, manifest, dest)
    fetched = time.perf_counter()
    config = EcgPullConfig()
    items = [read_ecg_observation(obs, config) for file in downloaded.files for obs in bulk.iter_ndjson(file.path)]
    decoded = time.perf_counter()
    bulk.cancel(client, status_url)
    ecgs = sum(isinstance(item, PulledEcg) for item in items)
    megabytes = sum(file.path.stat().st_size for file in downloaded.files) / 1e6
    return {
        "ecgs_exported": ecgs,
        "files": len(downloaded.files),
        "megabytes": round(megabytes, 1),
        "export_s": round(exported - started, 2),
        "polls_waited_s": sum(sleeps_s),
        "download_s": round(fetched - exported, 2),
        "download_mb_per_s": round(megabytes / (fetched - exported), 1),
        "read_and_decode_s": round(decoded - fetched, 2),
        "ecg_per_s_export_and_download": round(ecgs / (fetched - started), 1),
        "ecg_per_s_end_to_end": round(ecgs / (decoded - started), 1),
    }


def _rest_pull(client: FhirClient) -> dict[str, float | int]:
    started = time.perf_counter()
    pull = pull_ecgs(client, since=None, config=EcgPullConfig(ecg_code=f"{ECG_SYSTEM}|{ECG_CODE}", page_size=50))
    ecgs = sum(isinstance(item, PulledEcg) for item in pull)
    elapsed = time.perf_counter() - started
    return {"ecgs": ecgs, "seconds": round(elapsed, 2), "ecg_per_s": round(ecgs / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ecgs", type=int, default=500)
    parser.add_argument("--fs-hz", type=float, default=500.0)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--file-resources", type=int, default=100, help="most resources per export file")
    args = parser.parse_args()
    with (
        fhir_test_server(export_polls=0, export_file_resources=args.file_resources) as base_url,
        FhirClient(FhirConfig(base_url=base_url)) as client,
        tempfile.TemporaryDirectory() as work,
    ):
        seed_s = _seed(client, args.ecgs, args.fs_hz, args.duration_s)
        result = {
            "ecgs_seeded": args.ecgs,
            "fs_hz": args.fs_hz,
            "duration_s": args.duration_s,
            "seed_s": round(seed_s, 1),
            "bulk_export": _bulk(client, Path(work)),
            "rest_pull": _rest_pull(client),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""FHIR throughput against the real Medplum engine (tests/servers/fhir): prints one JSON object.

    .venv/bin/python bench/fhir_throughput.py [--ecgs 200] [--fs-hz 500] [--duration-s 10] [--writebacks 50]

Needs Node and ``npm ci --prefix tests/servers/fhir``. Measures, on one machine (client and server share
its cores): seeding ECG Observations (encode + validate + POST), the incremental pull (HTTP + JSON +
decode, ECG/s), decoding alone (MB/s of SampledData ``data`` text, per encoding), and write-back of
findings as transaction Bundles (Observations/s, first write and an idempotent repeat), on the empty
server and with the ECGs stored. The shim indexes ``identifier=system|value``, so conditional creates no
longer slow down as the server fills; searches by ``code`` (the pull) still scan what the server holds.
The client's own cost (build + R4 validation) is reported apart as ``writeback_client_side``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.fhir import (
    EcgPullConfig,
    EcgReference,
    FhirClient,
    FhirConfig,
    Finding,
    ModelInfo,
    build_writeback_bundle,
    ecg_to_observation,
    observation_to_ecg,
    pull_ecgs,
    write_back,
)
from integrations.fhir.sampled_data import Scaling, decode_data, encode_data

SERVER_DIR = Path(__file__).resolve().parents[1] / "tests" / "servers" / "fhir"
ECG_CODE = "urn:bench:ecg|ecg"
LABS = ("potassium_high", "potassium_low", "calcium_low", "hemoglobin_low", "creatinine_high", "troponin_high")
DIAGNOSES = ("I48", "I50", "N18", "I21")


def start_server() -> tuple[subprocess.Popen[str], str]:
    node = shutil.which("node")
    if node is None or not (SERVER_DIR / "node_modules").is_dir():
        sys.exit(f"needs node on PATH and `npm ci --prefix {SERVER_DIR}`")
    major = int(re.match(r"v(\d+)", subprocess.check_output([node, "--version"], text=True)).group(1))  # type: ignore[union-attr]
    flags = ["--experimental-websocket"] if major < 22 else []
    process = subprocess.Popen([node, *flags, "server.mjs", "0"], cwd=SERVER_DIR, stdout=subprocess.PIPE, text=True)
    port = int(process.stdout.readline().split()[1])  # type: ignore[union-attr]
    return process, f"http://127.0.0.1:{port}/fhir"


def record(index: int, fs_hz: float, duration_s: float) -> EcgRecord:
    rng = np.random.default_rng(index)
    signal_mv = np.cumsum(rng.normal(0.0, 0.02, (12, round(fs_hz * duration_s))), axis=1)
    return EcgRecord(f"bench-{index}", signal_mv, fs_hz, MODEL_LEAD_ORDER, acquired_at=datetime(2024, 5, 1, tzinfo=UTC))


def seed(client: FhirClient, n_ecgs: int, fs_hz: float, duration_s: float) -> dict[str, float]:
    start = time.perf_counter()
    for index in range(n_ecgs):
        observation = ecg_to_observation(record(index, fs_hz, duration_s), subject_reference=f"Patient/p{index}")
        observation["code"] = {"coding": [{"system": ECG_CODE.split("|")[0], "code": "ecg"}]}
        client.create(observation)
    wall_s = time.perf_counter() - start
    return {"ecgs": n_ecgs, "wall_s": wall_s, "ecgs_per_s": n_ecgs / wall_s}


def pull(client: FhirClient, n_ecgs: int, page_size: int) -> dict[str, float]:
    start = time.perf_counter()
    items = list(pull_ecgs(client, since=None, config=EcgPullConfig(ecg_code=ECG_CODE, page_size=page_size)))
    wall_s = time.perf_counter() - start
    assert len(items) == n_ecgs, f"pulled {len(items)} of {n_ecgs}"
    return {"ecgs": len(items), "page_size": page_size, "wall_s": wall_s, "ecgs_per_s": len(items) / wall_s}


def decode_only(client: FhirClient) -> dict[str, float]:
    """observation_to_ecg over the stored resources, without HTTP: ECG/s and MB/s of data text."""
    pages = client.search_pages("Observation", {"code": ECG_CODE, "_count": "50"})
    observations = [entry["resource"] for page in pages for entry in page.get("entry", [])]
    data_bytes = sum(len(c["valueSampledData"]["data"]) for o in observations for c in o["component"])
    start = time.perf_counter()
    for observation in observations:
        observation_to_ecg(observation)
    wall_s = time.perf_counter() - start
    return {"ecgs_per_s": len(observations) / wall_s, "data_mb_per_s": data_bytes / wall_s / 1e6}


def decode_text(n_samples: int = 5000, repeats: int = 200) -> dict[str, float]:
    """decode_data alone, MB/s of text, for integer counts, decimals, and counts with E/L/U tokens."""
    values_mv = np.cumsum(np.random.default_rng(0).normal(0.0, 0.02, n_samples))
    counts = encode_data(values_mv, factor=0.001)
    tokens = counts.split()
    tokens[::50] = ["E"] * len(tokens[::50])
    texts = {
        "integer_counts": counts,
        "decimals": " ".join(f"{v:.4f}" for v in values_mv),
        "integer_counts_with_E_every_50": " ".join(tokens),
    }
    rates = {}
    for name, text in texts.items():
        start = time.perf_counter()
        for _ in range(repeats):
            decode_data(text, Scaling(factor=0.001))
        rates[f"{name}_mb_per_s"] = len(text) * repeats / (time.perf_counter() - start) / 1e6
    return rates


#: What the agent notes on every charted finding: the label's validation figures and what was done to the signal.
NOTES = (
    "Validated on 200 ECGs: sensitivity 71 %, PPV 42 % at 10 % prevalence, AUROC 0.92 (95 % CI 0.86–0.97); "
    "model bench-model 1.0.0. Not a measurement.",
    "Signal: lead II imputed from I and III (flat-lead: held at 0.000 mV for the whole record)",
)


def findings() -> list[Finding]:
    labs = [
        Finding(target=t, kind="lab", code=f"lab-{i}", system="http://loinc.org", display=t, probability=0.7,
                positive=i % 2 == 0, lab_direction="high" if t.endswith("high") else "low", notes=NOTES)
        for i, t in enumerate(LABS)
    ]  # fmt: skip
    diagnoses = [
        Finding(target=t, kind="diagnosis", code=t, system="http://hl7.org/fhir/sid/icd-10-cm", display=t,
                probability=0.4, positive=False, explained_by=(LABS[i],), notes=NOTES)
        for i, t in enumerate(DIAGNOSES)
    ]  # fmt: skip
    return labs + diagnoses


def writeback(client: FhirClient, ecg_ids: list[str], model_version: str) -> dict[str, object]:
    """Write ``findings()`` for each ECG id twice: the first creates, the repeat must create nothing."""
    model = ModelInfo(name="bench-model", version=model_version, sha256=model_version.replace(".", "") * 8)
    rates: dict[str, object] = {"ecgs": len(ecg_ids), "observations_per_ecg": len(findings())}
    for run in ("first", "repeat"):
        start = time.perf_counter()
        created = 0
        for ecg_id in ecg_ids:
            ecg = EcgReference(
                observation_id=ecg_id,
                version="1",
                subject_reference=None,
                effective_at=datetime(2024, 5, 1, tzinfo=UTC),
            )
            created += write_back(client, ecg, model, findings()).created
        wall_s = time.perf_counter() - start
        n_observations = len(ecg_ids) * len(findings())
        rates[run] = {"wall_s": wall_s, "observations_per_s": n_observations / wall_s, "resources_created": created}
    return rates


def writeback_client_side(n_ecgs: int = 50) -> dict[str, float]:
    """Building and validating the write-back Bundles alone, no HTTP: the client's share of the cost."""
    model = ModelInfo(name="bench-model", version="9.9.9", sha256="9" * 64)
    start = time.perf_counter()
    for index in range(n_ecgs):
        ecg = EcgReference(
            observation_id=f"e{index}",
            version="1",
            subject_reference=None,
            effective_at=datetime(2024, 5, 1, tzinfo=UTC),
        )
        build_writeback_bundle(ecg, model, findings())
    wall_s = time.perf_counter() - start
    return {"observations_per_s": n_ecgs * len(findings()) / wall_s, "ms_per_ecg": wall_s / n_ecgs * 1000}


def stored_ecg_ids(client: FhirClient, n_ecgs: int) -> list[str]:
    pages = client.search_pages("Observation", {"code": ECG_CODE, "_count": str(n_ecgs)})
    return [entry["resource"]["id"] for entry in next(pages)["entry"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ecgs", type=int, default=200)
    parser.add_argument("--fs-hz", type=float, default=500.0)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--writebacks", type=int, default=50)
    args = parser.parse_args()
    process, base_url = start_server()
    try:
        with FhirClient(FhirConfig(base_url=base_url, timeout_s=120.0)) as client:
            # Write-back first on an empty server, then again once the ECG waveforms are stored: Medplum's
            # in-memory repository makes each transaction slower as it holds more data.
            empty_server_writeback = writeback(client, [f"ecg-{i}" for i in range(args.writebacks)], "1.0.0")
            result = {
                "benchmark": "fhir",
                "server": "Medplum 5.2.13 FhirRouter + MemoryRepository (tests/servers/fhir)",
                "ecg": {"fs_hz": args.fs_hz, "duration_s": args.duration_s, "leads": 12},
                "seed": seed(client, args.ecgs, args.fs_hz, args.duration_s),
                "pull": pull(client, args.ecgs, args.page_size),
                "decode_observations": decode_only(client),
                "decode_data_text": decode_text(),
                "writeback_on_empty_server": empty_server_writeback,
                "writeback_client_side": writeback_client_side(),
                "writeback_with_ecgs_stored": writeback(client, stored_ecg_ids(client, args.writebacks), "2.0.0"),
                "unix_time": int(time.time()),
            }
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

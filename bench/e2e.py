"""End-to-end agent throughput: FHIR pull → validate → score → SQL → FHIR write-back. Prints one JSON object.

    .venv/bin/python bench/e2e.py [--artifact out/demo/model] [--data data/sim] [--ecgs 1000]

Seeds ``--ecgs`` simulated ECGs (10 s, 500 Hz, from the simulated hospital's WFDB files) into the local
FHIR test server, then measures, in the same process and on the same records:

- ``model_only``: the shared preprocessing + the TorchScript model, in batches (the agent's scorer);
- ``end_to_end``: one ``run-once`` (pull, validate, score, store in SQLite, write back to FHIR).

``ratio_to_model_only`` = end-to-end ECG/s ÷ model-only ECG/s. The FHIR server (Node) runs on the same
cores; its peak memory is reported beside the agent's, and so is the CPU time per ECG of each process:
``cpu_bound`` is the most ECG/s this machine could reach if every core were busy all the time with the
measured work (cores ÷ CPU seconds per ECG), i.e. the ceiling the ratio can reach on this machine
while the server shares its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from agent.registry import ModelRegistry
from agent.scoring import score_records
from agent.service import AgentService
from agent.settings import load_settings
from integrations.fhir import FhirClient, FhirConfig, ecg_to_observation
from integrations.wfdb_files import read_wfdb
from model_training.artifact import load_artifact
from model_training.data.layout import DataLayout

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from fhir_test_server import fhir_test_server


def _records(data: Path, n: int) -> list:
    layout = DataLayout()
    paths = pd.read_csv(layout.resolve(data, layout.record_list))["path"].tolist()
    return [read_wfdb(data / layout.ecg_root / paths[i % len(paths)]) for i in range(n)]


def _server_pid() -> int:
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"server.mjs" in cmdline:
            return int(pid)
    raise RuntimeError("the FHIR test server's process was not found")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms_per_ecg(seconds: float, ecgs: int) -> float:
    return round(1000 * seconds / ecgs, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("out/demo/model"))
    parser.add_argument("--data", type=Path, default=Path("data/sim"))
    parser.add_argument("--ecgs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-in-flight", type=int, default=4, help="studies written back at once")
    args = parser.parse_args()
    records = _records(args.data, args.ecgs)
    artifact = load_artifact(args.artifact)

    started, started_cpu_s = time.perf_counter(), time.process_time()
    score_records(records, artifact, batch_size=args.batch_size, explanation_top_k=3)
    model_only_s, model_only_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu_s

    with tempfile.TemporaryDirectory() as work, fhir_test_server() as base_url:
        with FhirClient(FhirConfig(base_url=base_url)) as client:
            for index, record in enumerate(records):
                client.create(ecg_to_observation(record, subject_reference=f"Patient/bench-{index}"))
        settings = load_settings(
            database_url=f"sqlite:///{work}/agent.db",
            registry_dir=Path(work) / "models",
            sources={"fhir": {"enabled": True, "server": {"base_url": base_url}, "page_size": 100}},
            sinks={"fhir": {"enabled": True, "max_in_flight": args.max_in_flight}},
            scoring={"batch_size": args.batch_size},
        )
        service = AgentService(settings)
        registry = ModelRegistry(service.store, settings.registry_dir, actor="bench")
        version = registry.register(args.artifact).version
        registry.promote(version, reason="bench")
        server = _server_pid()
        server_started_cpu_s = _cpu_s(server)
        started, started_cpu_s = time.perf_counter(), time.process_time()
        outcome = service.run_once(progress=False)
        end_to_end_s, agent_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu_s
        server_cpu_s = _cpu_s(server) - server_started_cpu_s
        server_rss_mb = _peak_rss_mb(server)

    cores = len(os.sched_getaffinity(0))
    cpu_bound = cores * args.ecgs / (agent_cpu_s + server_cpu_s)
    model_only = args.ecgs / model_only_s
    counts = dict(outcome.report.counts) if outcome.report else {}
    print(json.dumps({
        "benchmark": "e2e",
        "ecgs": args.ecgs,
        "cores": cores,
        "max_in_flight": args.max_in_flight,
        "model_only": {"seconds": model_only_s, "ecg_per_s": model_only,
                       "cpu_ms_per_ecg": _ms_per_ecg(model_only_cpu_s, args.ecgs)},
        "end_to_end": {"seconds": end_to_end_s, "ecg_per_s": args.ecgs / end_to_end_s, "counts": counts,
                       "exit_code": outcome.exit_code,
                       "agent_cpu_ms_per_ecg": _ms_per_ecg(agent_cpu_s, args.ecgs),
                       "fhir_server_cpu_ms_per_ecg": _ms_per_ecg(server_cpu_s, args.ecgs)},
        "ratio_to_model_only": (args.ecgs / end_to_end_s) / model_only,
        "target_ratio": 0.7,
        "cpu_bound": {"ecg_per_s": cpu_bound, "ratio_to_model_only": cpu_bound / model_only},
        "agent_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "fhir_server_peak_rss_mb": server_rss_mb,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

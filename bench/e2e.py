"""End-to-end agent throughput: FHIR pull → validate → score → SQL → FHIR write-back. Prints one JSON object.

    .venv/bin/python bench/e2e.py [--artifact out/demo/model | --fresh-model] [--data data/sim] [--ecgs 1000]
                                  [--torch-threads 1] [--py-spy run-once.spy]

With ``--fresh-model``, or when ``--artifact`` (default ``out/demo/model``) is absent, the model is a fresh
one of the demo size (the demo config's encoder and heads, untrained: the cost does not depend on the
weights) with the demo model's 82 diagnoses and 45 lab targets, its thresholds set so that every ECG has
what the demo night has per ECG: 15 positive labels, 2 of them charted (17 labels charted in all) and their
lab explanations.

Seeds ``--ecgs`` simulated ECGs (10 s, 500 Hz, from the simulated hospital's WFDB files) into the local
FHIR test server, then measures, in the same process and on the same records:

- ``model_only``: the shared preprocessing + the TorchScript model, in batches (the agent's scorer);
- ``end_to_end``: one ``run-once`` (pull, validate, score, store in SQLite, write back to FHIR).

``ratio_to_model_only`` = end-to-end ECG/s ÷ model-only ECG/s. The FHIR server (Node) runs on the same
cores; its peak memory is reported beside the agent's, and so is the CPU time per ECG of each process:
``cpu_bound`` is the most ECG/s this machine could reach if every core were busy all the time with the
measured work (cores ÷ CPU seconds per ECG), i.e. the ceiling the ratio can reach on this machine
while the server shares its cores. ``agent_cpu_ms_per_ecg_outside_model`` is the agent process's CPU per
ECG (every thread: pull, decode, validate, SQL, write-back) minus the model-only CPU per ECG on the same
records: what the agent itself costs beyond preprocessing and scoring.

``fhir_pull_only`` is the floor under that figure: after the run, the same Observations pulled once more
from the same server by the agent's own pull (search pages, JSON, SampledData decode and mapping to the
ECG record), nothing else, in one thread; its thread CPU per ECG, split into the HTTP + JSON of the pages
and the decode.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from demo_artifact import fresh_demo_artifact

from agent.registry import ModelRegistry
from agent.scoring import score_records
from agent.service import AgentService
from agent.settings import load_settings
from integrations.fhir import EcgPullConfig, FhirClient, FhirConfig, ecg_to_observation, pull_ecgs
from integrations.fhir.pull import bundle_resources, read_ecg_observation
from integrations.wfdb_files import read_wfdb
from model_training.artifact import load_artifact
from model_training.data.layout import DataLayout

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from fhir_test_server import fhir_test_server

#: Observations per search page, in the run and in the pull-only measurement.
PAGE_SIZE = 100


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


#: Where a sampled stack's time goes: the first cost centre with a frame in the stack wins (names as py-spy
#: prints them: ``function`` or ``Class.method``).
COST_CENTRES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model: shared preprocessing + TorchScript", ("score_records",)),
    ("model load: artifact re-hash + TorchScript load", ("ModelLoader.load_for_run",)),
    ("FHIR pull: SampledData decode + mapping", ("observation_to_ecg",)),
    ("FHIR pull: HTTP + JSON of the pages", ("FhirClient.search_pages",)),
    ("signal plausibility", ("validate_record",)),
    ("SQL: study rows", ("_store_studies",)),
    ("SQL: results (prediction sets, payloads, outbox rows, status)", ("_commit_results",)),
    ("write-back: earlier versions of the ECG (SQL)", ("study_versions",)),
    ("write-back: charted findings + bundle build", ("charted_findings", "_build")),
    ("write-back: HTTP transaction", ("FhirClient.transaction",)),
    (
        "write-back: outbox claims and marks (SQL)",
        ("Store.claim_outbox", "Store.mark_outbox_sent_many", "Deliveries._record_failure"),
    ),
)


@contextmanager
def _sampled(path: Path | None, rate_hz: int) -> Iterator[None]:
    """py-spy samples this process in the block: every Python thread, while it holds the GIL; raw stacks to ``path``.

    Sampling only GIL-holding stacks counts what the agent's Python (and the C it calls without releasing the
    GIL: JSON, numpy parsing, SQLAlchemy) spends, not threads waiting on a socket, a lock or the database;
    torch's kernels release the GIL, so most of the model's time is not in it (it is measured as model-only).
    """
    if path is None:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    command = [str(spy), "record", "--pid", str(os.getpid()), "--rate", str(rate_hz), "--format", "raw",
               "--output", str(path), "--gil"]  # fmt: skip
    sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        _, errors = sampler.communicate(timeout=60)
        if sampler.returncode != 0:
            raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")


def _cost_centres(path: Path, rate_hz: int, ecgs: int) -> dict[str, float]:
    """Sampled thread time per cost centre, in ms per ECG, largest first."""
    samples: dict[str, int] = dict.fromkeys([name for name, _ in COST_CENTRES] + ["other"], 0)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        functions = {frame.split(" (", 1)[0] for frame in stack.split(";")}
        centre = next((name for name, marks in COST_CENTRES if functions.intersection(marks)), "other")
        samples[centre] += int(count)
    ms_per_sample = 1000 / rate_hz
    by_centre = {name: round(n * ms_per_sample / ecgs, 2) for name, n in samples.items()}
    return dict(sorted(by_centre.items(), key=lambda item: -item[1]))


def _pull_only_cpu_ms(base_url: str, page_size: int) -> dict[str, float]:
    """Thread CPU per ECG of pulling every seeded ECG once: HTTP + JSON of the pages, then decode + mapping."""
    config = EcgPullConfig(page_size=page_size)
    with FhirClient(FhirConfig(base_url=base_url)) as client:
        started_s = time.thread_time()
        pages = list(client.search_pages("Observation", pull_ecgs(client, since=None, config=config).search_params()))
        fetched_s = time.thread_time()
        observations = [o for page in pages for o in bundle_resources(page, "Observation")]
        for observation in observations:
            read_ecg_observation(observation, config)
        decoded_s = time.thread_time()
    http_json_ms = _ms_per_ecg(fetched_s - started_s, len(observations))
    decode_ms = _ms_per_ecg(decoded_s - fetched_s, len(observations))
    return {"cpu_ms_per_ecg": round(http_json_ms + decode_ms, 2), "http_json_ms_per_ecg": http_json_ms,
            "decode_and_mapping_ms_per_ecg": decode_ms}  # fmt: skip


def _ms_per_ecg(seconds: float, ecgs: int) -> float:
    return round(1000 * seconds / ecgs, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("out/demo/model"),
                        help="an exported model; when absent, a fresh demo-size one (see above)")  # fmt: skip
    parser.add_argument("--fresh-model", action="store_true", help="a fresh demo-size model even if --artifact exists")
    parser.add_argument("--data", type=Path, default=Path("data/sim"))
    parser.add_argument("--ecgs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-in-flight", type=int, default=4, help="studies written back at once")
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        dest="py_spy",
        help="sample run-once with py-spy (the [dev] extra) into this raw-stacks file and add "
        "`profile_ms_per_ecg`, the sampled thread time per cost centre, to the JSON",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch's intra-op threads in both measurements (default: torch's own choice); 1 keeps "
        "idle OpenMP workers from spinning on a shared machine, which steadies the CPU figures",
    )
    parser.add_argument("--py-spy-rate", type=int, default=250, help="samples per second")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    records = _records(args.data, args.ecgs)
    fresh_dir = tempfile.TemporaryDirectory()
    fresh = args.fresh_model or not args.artifact.exists()
    artifact_dir = fresh_demo_artifact(Path(fresh_dir.name)) if fresh else args.artifact
    artifact = load_artifact(artifact_dir)

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
            sources={"fhir": {"enabled": True, "server": {"base_url": base_url}, "page_size": PAGE_SIZE}},
            sinks={"fhir": {"enabled": True, "max_in_flight": args.max_in_flight}},
            scoring={"batch_size": args.batch_size},
        )
        service = AgentService(settings)
        registry = ModelRegistry(service.store, settings.registry_dir, actor="bench")
        version = registry.register(artifact_dir).version
        registry.promote(version, reason="bench")
        server = _server_pid()
        server_started_cpu_s = _cpu_s(server)
        started, started_cpu_s = time.perf_counter(), time.process_time()
        with _sampled(args.py_spy, args.py_spy_rate):
            outcome = service.run_once(progress=False)
        end_to_end_s, agent_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu_s
        server_cpu_s = _cpu_s(server) - server_started_cpu_s
        server_rss_mb = _peak_rss_mb(server)
        pull_only = _pull_only_cpu_ms(base_url, page_size=PAGE_SIZE)

    fresh_dir.cleanup()
    cores = len(os.sched_getaffinity(0))
    cpu_bound = cores * args.ecgs / (agent_cpu_s + server_cpu_s)
    model_only = args.ecgs / model_only_s
    counts = dict(outcome.report.counts) if outcome.report else {}
    model_cpu_ms, agent_cpu_ms = _ms_per_ecg(model_only_cpu_s, args.ecgs), _ms_per_ecg(agent_cpu_s, args.ecgs)
    profile = {"profile_ms_per_ecg": _cost_centres(args.py_spy, args.py_spy_rate, args.ecgs)} if args.py_spy else {}
    print(json.dumps({
        "benchmark": "e2e",
        "model": f"{artifact.manifest.model_name} {artifact.manifest.model_version}",
        "ecgs": args.ecgs,
        "cores": cores,
        "max_in_flight": args.max_in_flight,
        "torch_threads": torch.get_num_threads(),
        "model_only": {"seconds": model_only_s, "ecg_per_s": model_only,
                       "cpu_ms_per_ecg": model_cpu_ms},
        "end_to_end": {"seconds": end_to_end_s, "ecg_per_s": args.ecgs / end_to_end_s, "counts": counts,
                       "exit_code": outcome.exit_code,
                       "agent_cpu_ms_per_ecg": agent_cpu_ms,
                       "fhir_server_cpu_ms_per_ecg": _ms_per_ecg(server_cpu_s, args.ecgs)},
        "agent_cpu_ms_per_ecg_outside_model": round(agent_cpu_ms - model_cpu_ms, 2),
        "fhir_pull_only": pull_only,
        "ratio_to_model_only": (args.ecgs / end_to_end_s) / model_only,
        "target_ratio": 0.7,
        "cpu_bound": {"ecg_per_s": cpu_bound, "ratio_to_model_only": cpu_bound / model_only},
        "agent_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "fhir_server_peak_rss_mb": server_rss_mb,
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        **profile,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

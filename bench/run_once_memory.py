"""Peak memory of `ecg-agent run-once` as its own process, on nights of 1,000 and 10,000 ECGs. Prints one JSON object.

    .venv/bin/python bench/run_once_memory.py [--ecgs 1000 10000] [--artifact out/demo/model] [--data data/sim]
    .venv/bin/python bench/run_once_memory.py --source fhir --ecgs 500 2000

A hospital's big night comes as files: the bench seeds, in a step of its own before anything is measured, a WFDB
drop folder of N records (symlinks to the simulated hospital's 12-lead, 10 s, 500 Hz records, each under its own
folder so that every one is a new study; ``--data`` names a simulated hospital, otherwise a small one is
simulated here). ``--source fhir`` seeds the local FHIR test server instead (N ECG Observations, pulled page by
page; the test server keeps every Observation in its own memory, so nights of a few thousand fit this machine,
not 10,000). Each night gets a fresh SQLite store into which the model (``--artifact``, otherwise a fresh
untrained model of the demo size) is registered and promoted with the agent's own admin CLI (`ecg-agent db
upgrade`, `model register`, `model promote`). Then `python -m agent.cli run-once` runs as a child process and
the bench polls that process's own peak RSS (``VmHWM`` in ``/proc/PID/status``) until it exits, and takes its
CPU time from ``wait4`` and the run's counts from the store. (Not ``ru_maxrss``: Linux carries a process's
high-water mark across ``exec``, so a child of this bench, which has imported torch, would report at least the
bench's own RSS.)

``baseline`` is the same process on an empty folder: importing Python, torch and the agent and loading the
model, with nothing to score. ``growth_<first>_to_<last>_percent`` compares the peak RSS of the smallest and
largest nights; the goal is a peak below 1.5 GB and within +10 % from 1,000 to 10,000 ECGs. No sink is
enabled (results are stored in SQL): what is measured is pull, validate, score and commit. On a
shared machine the wall times move with the load (``load_avg_1min_at_end``); the peak RSS does not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd
from demo_artifact import fresh_demo_artifact

from integrations.fhir import FhirClient, FhirConfig, ecg_to_observation
from integrations.store import Store
from integrations.wfdb_files import read_wfdb
from model_training.artifact import MANIFEST_FILE
from model_training.data.layout import DataLayout

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from fhir_test_server import fhir_test_server

GOAL_PEAK_RSS_MB = 1536
GOAL_GROWTH_PERCENT = 10.0
SIMULATED_PATIENTS = 200
FHIR_PAGE_SIZE = 100
#: How often the child's VmHWM is read; a high-water mark, so only growth in the last interval could be missed.
POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Night:
    """One measured `run-once`: the child's own peak RSS, wall and CPU time, and the run's counts."""

    ecgs: int
    peak_rss_mb: float
    wall_s: float
    cpu_s: float
    exit_code: int
    scored: int
    counts: dict[str, int]

    @property
    def ecg_per_s(self) -> float:
        return round(self.scored / self.wall_s, 1) if self.scored else 0.0


def _simulated_hospital(out: Path) -> Path:
    """A small simulated hospital: the pool of records the nights are seeded from."""
    subprocess.run([sys.executable, "-m", "model_training.cli", "simulate", "--patients", str(SIMULATED_PATIENTS),
                    "--seed", "0", "--out", str(out), "--workers", "1", "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return out


def _record_pool(data: Path) -> list[Path]:
    """The header paths of the simulated hospital's ECGs, relative to its ECG root."""
    layout = DataLayout()
    paths = pd.read_csv(layout.resolve(data, layout.record_list))["path"].tolist()
    return [Path(f"{path}.hea") for path in paths]


class NightSource(Protocol):
    """Where a night's ECGs wait: seeded before the measured run, named in its settings."""

    name: str

    def seed(self, folder: Path, n: int) -> str:
        """Make ``n`` new ECGs wait for a fresh store; the settings section that points run-once at them."""
        ...


class WfdbNights:
    """A drop folder per night: copy ``i`` links the pool's record ``i mod len(pool)`` under ``cNNNNN/``."""

    name = "wfdb"

    def __init__(self, ecg_root: Path, pool: list[Path]) -> None:
        self._ecg_root, self._pool = ecg_root, pool

    def seed(self, folder: Path, n: int) -> str:
        night = folder / "wfdb"
        night.mkdir()
        for index in range(n):
            header = self._pool[index % len(self._pool)]
            copy = night / f"c{index:05d}" / header.parent
            copy.mkdir(parents=True)
            for file in (self._ecg_root / header.parent).glob(f"{header.stem}.*"):
                (copy / file.name).symlink_to(file.resolve())
        return f'[sources.wfdb]\nenabled = true\npath = "{night}"\nsettle_s = 0\n'


class FhirNights:
    """One FHIR test server for every night: topped up to ``n`` ECG Observations, all new to a fresh store."""

    name = "fhir"

    def __init__(self, base_url: str, ecg_root: Path, pool: list[Path]) -> None:
        self._base_url = base_url
        self._records = [read_wfdb(ecg_root / header.with_suffix("")) for header in pool]
        self._stored = 0

    def seed(self, folder: Path, n: int) -> str:
        if n < self._stored:
            raise ValueError(f"the server already holds {self._stored} ECGs; measure the nights in growing order")
        with FhirClient(FhirConfig(base_url=self._base_url)) as client:
            for index in range(self._stored, n):
                record = self._records[index % len(self._records)]
                client.create(ecg_to_observation(record, subject_reference=f"Patient/bench-{index}"))
        self._stored = n
        return (f"[sources.fhir]\nenabled = true\npage_size = {FHIR_PAGE_SIZE}\n"
                f'[sources.fhir.server]\nbase_url = "{self._base_url}"\n')  # fmt: skip


def _agent(config: Path, *args: str) -> list[str]:
    """The command line of ``ecg-agent --config CONFIG ARGS...`` in this interpreter."""
    return [sys.executable, "-m", "agent.cli", "--config", str(config), *args]


def _admin(config: Path, *args: str) -> None:
    done = subprocess.run(_agent(config, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ecg-agent {' '.join(args)} exited {done.returncode}: {done.stdout.decode()}")


def _hospital(folder: Path, source: str, artifact: Path, version: str, batch_size: int) -> tuple[Path, str]:
    """A fresh store with ``version`` active (through the admin CLI), reading the night from ``source``."""
    url = f"sqlite:///{folder / 'agent.db'}"
    config = folder / "agent.toml"
    config.write_text(
        f'database_url = "{url}"\nregistry_dir = "{folder / "registry"}"\n[scoring]\nbatch_size = {batch_size}\n'
        + source
    )
    _admin(config, "db", "upgrade")
    _admin(config, "model", "register", str(artifact))
    _admin(config, "model", "promote", version, "--reason", "bench")
    return config, url


def _run_once(config: Path, url: str, n: int, log: Path) -> Night:
    """`run-once` as a child process, its peak RSS polled from ``/proc/PID/status`` until ``wait4`` reaps it."""
    started = time.perf_counter()
    peak_kb = 0
    with log.open("wb") as output:
        process = subprocess.Popen(_agent(config, "run-once", "--no-progress"), stdout=output, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak_kb = max(peak_kb, _vm_hwm_kb(process.pid))
            time.sleep(POLL_S)
    wall_s = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    store = Store.from_url(url)
    try:
        (run,) = store.list_runs(limit=1)
    finally:
        store.dispose()
    return Night(
        ecgs=n, peak_rss_mb=round(peak_kb / 1024, 1), wall_s=round(wall_s, 2),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 2), exit_code=process.returncode,
        scored=run.counts.get("scored", 0), counts=dict(run.counts),
    )  # fmt: skip


def _vm_hwm_kb(pid: int) -> int:
    """The process's resident-set high-water mark in kB; 0 once it has exited (a zombie has no memory lines)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _measure(work: Path, nights: NightSource, n: int, artifact: Path, version: str, batch_size: int) -> Night:
    folder = work / f"night-{n}"
    folder.mkdir()
    config, url = _hospital(folder, nights.seed(folder, n), artifact, version, batch_size)
    measured = _run_once(config, url, n, folder / "run-once.log")
    if measured.exit_code not in (0, 3):  # 3: the simulated hospital's unusable ECGs passed the failure rate
        raise RuntimeError(f"run-once exited {measured.exit_code}: {(folder / 'run-once.log').read_text()[-2000:]}")
    shutil.rmtree(folder / "wfdb", ignore_errors=True)  # 10,000 links, dropped before the next night is seeded
    return measured


def _summary(night: Night) -> dict[str, object]:
    return {**asdict(night), "ecg_per_s": night.ecg_per_s}


def _label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ecgs", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--artifact", type=Path, default=None, help="an exported model (default: fresh demo-size)")
    parser.add_argument("--data", type=Path, default=None, help="a simulated hospital (default: simulate one)")
    parser.add_argument("--source", choices=("wfdb", "fhir"), default="wfdb")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-run-once-memory-"))
    try:
        artifact = args.artifact or fresh_demo_artifact(work / "artifact")
        version = json.loads((artifact / MANIFEST_FILE).read_text())["model_version"]
        data = args.data or _simulated_hospital(work / "sim")
        pool = _record_pool(data)
        ecg_root = data / DataLayout().ecg_root
        with ExitStack() as stack:
            source: NightSource = (
                WfdbNights(ecg_root, pool)
                if args.source == "wfdb"
                else FhirNights(stack.enter_context(fhir_test_server()), ecg_root, pool)
            )
            baseline = _measure(work, source, 0, artifact, version, args.batch_size)
            nights = [_measure(work, source, n, artifact, version, args.batch_size) for n in sorted(args.ecgs)]
        first, last = nights[0], nights[-1]
        growth = round(100 * (last.peak_rss_mb - first.peak_rss_mb) / first.peak_rss_mb, 1)
        print(json.dumps({
            "benchmark": "run_once_memory",
            "source": args.source,
            "batch_size": args.batch_size,
            "record_pool": len(pool),
            "cores": len(os.sched_getaffinity(0)),
            "baseline_0_ecgs": _summary(baseline),
            "nights": [_summary(night) for night in nights],
            f"growth_{_label(first.ecgs)}_to_{_label(last.ecgs)}_percent": growth,
            "goal": {"peak_rss_mb_below": GOAL_PEAK_RSS_MB, "growth_percent_at_most": GOAL_GROWTH_PERCENT,
                     "met": last.peak_rss_mb < GOAL_PEAK_RSS_MB and growth <= GOAL_GROWTH_PERCENT},
            "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        }, indent=2))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

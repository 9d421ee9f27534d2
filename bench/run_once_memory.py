"""Peak memory of `ecg-agent run-once` as its own process, on nights of 1,000 and 10,000 ECGs. Prints one JSON object.

    .venv/bin/python bench/run_once_memory.py [--ecgs 1000 10000] [--artifact out/demo/model] [--data data/sim]

A hospital's big night comes as files: the bench seeds, in a step of its own before anything is measured, a WFDB
drop folder of N records (symlinks to the simulated hospital's 12-lead, 10 s, 500 Hz records, each under its own
folder so that every one is a new study; ``--data`` names a simulated hospital, otherwise a small one is
simulated here). Each night gets a fresh SQLite store into which the model (``--artifact``, otherwise a fresh
untrained model of the demo size) is registered and promoted with the agent's own admin CLI (`ecg-agent db
upgrade`, `model register`, `model promote`). Then `python -m agent.cli run-once` runs as a child process and
the bench polls that process's own peak RSS (``VmHWM`` in ``/proc/PID/status``) until it exits, and takes its
CPU time from ``wait4`` and the run's counts from the store. (Not ``ru_maxrss``: Linux carries a process's
high-water mark across ``exec``, so a child of this bench, which has imported torch, would report at least the
bench's own RSS.)

``baseline`` is the same process on an empty folder: importing Python, torch and the agent and loading the
model, with nothing to score. ``growth_<first>_to_<last>_percent`` compares the peak RSS of the smallest and
largest nights; the goal is a peak below 1.5 GB and within +10 % from 1,000 to 10,000 ECGs. No sink is
enabled (WFDB-sourced results are stored in SQL): what is measured is pull, validate, score and commit. On a
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
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from demo_artifact import fresh_demo_artifact

from integrations.store import Store
from model_training.artifact import MANIFEST_FILE
from model_training.data.layout import DataLayout

GOAL_PEAK_RSS_MB = 1536
GOAL_GROWTH_PERCENT = 10.0
SIMULATED_PATIENTS = 200
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


def _seed_night(night: Path, ecg_root: Path, pool: list[Path], n: int) -> None:
    """``n`` records in ``night``: copy ``i`` links the pool's record ``i mod len(pool)`` under ``cNNNNN/``."""
    night.mkdir(parents=True)
    for index in range(n):
        header = pool[index % len(pool)]
        folder = night / f"c{index:05d}" / header.parent
        folder.mkdir(parents=True)
        for file in (ecg_root / header.parent).glob(f"{header.stem}.*"):
            (folder / file.name).symlink_to(file.resolve())


def _agent(config: Path, *args: str) -> list[str]:
    """The command line of ``ecg-agent --config CONFIG ARGS...`` in this interpreter."""
    return [sys.executable, "-m", "agent.cli", "--config", str(config), *args]


def _admin(config: Path, *args: str) -> None:
    done = subprocess.run(_agent(config, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ecg-agent {' '.join(args)} exited {done.returncode}: {done.stdout.decode()}")


def _hospital(folder: Path, night: Path, artifact: Path, version: str, batch_size: int) -> tuple[Path, str]:
    """A fresh store with ``version`` active (through the admin CLI) and ``night`` as its WFDB folder."""
    url = f"sqlite:///{folder / 'agent.db'}"
    config = folder / "agent.toml"
    config.write_text(
        f'database_url = "{url}"\nregistry_dir = "{folder / "registry"}"\n[scoring]\nbatch_size = {batch_size}\n'
        f'[sources.wfdb]\nenabled = true\npath = "{night}"\nsettle_s = 0\n'
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


def _measure(work: Path, data: Path, pool: list[Path], n: int, artifact: Path, version: str, batch_size: int) -> Night:
    folder = work / f"night-{n}"
    folder.mkdir()
    night = folder / "wfdb"
    _seed_night(night, data / DataLayout().ecg_root, pool, n)
    config, url = _hospital(folder, night, artifact, version, batch_size)
    measured = _run_once(config, url, n, folder / "run-once.log")
    if measured.exit_code not in (0, 3):  # 3: the simulated hospital's unusable ECGs passed the failure rate
        raise RuntimeError(f"run-once exited {measured.exit_code}: {(folder / 'run-once.log').read_text()[-2000:]}")
    shutil.rmtree(night)  # 10,000 links, dropped before the next night is seeded
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
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-run-once-memory-"))
    try:
        artifact = args.artifact or fresh_demo_artifact(work / "artifact")
        version = json.loads((artifact / MANIFEST_FILE).read_text())["model_version"]
        data = args.data or _simulated_hospital(work / "sim")
        pool = _record_pool(data)
        baseline = _measure(work, data, pool, 0, artifact, version, args.batch_size)
        nights = [_measure(work, data, pool, n, artifact, version, args.batch_size) for n in sorted(args.ecgs)]
        first, last = nights[0], nights[-1]
        growth = round(100 * (last.peak_rss_mb - first.peak_rss_mb) / first.peak_rss_mb, 1)
        print(json.dumps({
            "benchmark": "run_once_memory",
            "source": "wfdb",
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

"""Simulated-hospital throughput and memory: prints one JSON object.

    .venv/bin/python bench/simulate.py [--patients 10000] [--workers 2]

Runs the generator at two sizes in fresh subprocesses and reports wall time, patients
and ECG studies per second, and the peak RSS of the parent and of the largest worker:
flat memory means the small and large runs peak alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from model_training.simulator.simulate import simulate_hospital
start = time.perf_counter()
summary = simulate_hospital(Path(sys.argv[1]), n_patients=int(sys.argv[2]), seed=0, workers=int(sys.argv[3]),
                            progress=False)
print(json.dumps({"wall_s": time.perf_counter() - start, "n_studies": summary.n_studies,
                  "parent_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run(n_patients: int, workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-c", _CHILD, out, str(n_patients), str(workers)],
                                capture_output=True, text=True, check=True)  # fmt: skip
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["patients"] = n_patients
    measured["patients_per_s"] = n_patients / measured["wall_s"]
    measured["studies_per_s"] = measured["n_studies"] / measured["wall_s"]
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    small = run(max(args.patients // 5, 1), args.workers)
    large = run(args.patients, args.workers)
    print(json.dumps({
        "benchmark": "simulate",
        "cpu_count": os.cpu_count(),
        "workers": args.workers,
        "small": small,
        "large": large,
        "target_wall_s_for_10000_patients": 180,
        "bench_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "unix_time": int(time.time()),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

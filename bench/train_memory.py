"""Peak memory of the training data path: prints one JSON object.

    .venv/bin/python bench/train_memory.py --patients 4000 --root /tmp/stream-bench/4k [--steps simulate,cohort,run]

Runs each step as a child process, one after the other, under ``/usr/bin/time -v`` (Linux), and reports
each one's wall time and peak resident set size (the largest of the process and its waited-for
children, as the kernel counts it):

* ``simulate``: ``ecg-train simulate`` of N patients into ROOT/data;
* ``cohort``: the cohort build (``build_cohort``) into ROOT/data/cohort;
* ``repeat`` (instead of the first two, not measured): ROOT/data/cohort as ``--times`` copies of the cohort
  ``--repeat-cohort``, to reach a large ECG count without simulating it;
* ``epoch`` (optional): the data path alone, no model: one training epoch of crops through the training
  loader, then every validation and test ECG read whole and cut into evaluation windows;
* ``run``: ``ecg-train run`` with a short configuration (one epoch per stage, the tiny network, large
  batches) into ROOT/run: what matters is the data path, not convergence.

Training streams its windows from the cohort's on-disk ECG file, so the ``run`` peak should stay
near the same figure whatever the number of ECGs, growing only with the clinical table; the
ECG file's size is printed beside it for comparison. ``--steps`` reruns a subset on an existing
ROOT (for example ``run`` after a code change). The data under ROOT is large (about 50 kB per ECG);
delete it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_BUILD_COHORT = """
import sys
from pathlib import Path
from model_training.data.cohort import build_cohort
cohort = build_cohort(Path(sys.argv[1]), Path(sys.argv[2]), workers=int(sys.argv[3]), progress=False)
print("studies", len(cohort.study_ids))
"""

# The data path alone, without models: one training epoch of crops (batches of 512) read by the training
# loader, then every validation and test ECG read whole and cut into evaluation windows.
_READ_EPOCH = """
import sys
from pathlib import Path
import torch
from model_training.data.cohort import load_cohort
from model_training.scoring import split_windows
from model_training.train.data import CohortTensors
from model_training.train.distributed import DistContext
from model_training.train.loop import FitSettings, training_loader
data = CohortTensors.from_cohort(load_cohort(Path(sys.argv[1])))
settings = FitSettings(epochs=1, batch_size=512, seed=0, weight_decay=0.0, progress=False, desc="bench")
loader, batches = training_loader(data, settings, DistContext(0, 1, torch.device("cpu")))
batches.set_epoch(0)
studies = sum(len(rows) for rows, _ in loader)
for split in ("val", "test"):
    for rows in data.splits[split].split(256):
        split_windows(data.ecg.records(rows), data.window_samples)
print("studies", studies)
"""

SHORT_CONFIG = """\
# bench/train_memory.py: one epoch per stage, tiny network, large batches.
model:
  stem_width: 8
  widths: [8, 16]
  blocks_per_stage: 1
  embedding_dim: 16
  clinical_hidden: [16]
  joint_dim: 16
pretrain:
  epochs: 1
labs:
  epochs: 1
diagnosis:
  epochs: 1
baselines:
  epochs: 1
evaluation:
  n_bootstrap: 20
batch_size: 512
num_threads: 1
progress: false
"""

_MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def measure(argv: list[str], *, nice: int) -> dict[str, float]:
    """Run ``argv`` under ``/usr/bin/time -v``; its wall time and peak RSS, or raise with its stderr."""
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", "nice", "-n", str(nice), *argv], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})  # fmt: skip
    wall_s = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    peak_kb = int(_MAX_RSS.search(result.stderr).group(1))  # type: ignore[union-attr]
    return {"wall_s": round(wall_s, 1), "peak_rss_mb": round(peak_kb / 1024, 1)}


def repeat_cohort(source: Path, target: Path, times: int) -> None:
    """A cohort of ``times`` copies of ``source`` (ECG file and tables repeated, study and subject ids offset):
    ECG-count scale without simulating it, for the ``epoch`` and ``run`` steps."""
    target.mkdir(parents=True, exist_ok=True)
    with (target / "ecg.f32").open("wb") as sink:
        for _ in range(times):
            with (source / "ecg.f32").open("rb") as part:
                shutil.copyfileobj(part, sink, 16 << 20)
    arrays = dict(np.load(source / "arrays.npz"))
    id_offset = int(max(arrays["study_ids"].max(), arrays["subject_ids"].max())) + 1
    repeated = {name: np.concatenate([arrays[name] + i * id_offset if name.endswith("_ids") else arrays[name]
                                      for i in range(times)])
                for name in ("study_ids", "subject_ids", "folds", "features", "dx_labels", "lab_labels")}  # fmt: skip
    np.savez(target / "arrays.npz", feature_medians=arrays["feature_medians"], **repeated)
    meta = json.loads((source / "cohort.json").read_text())
    meta["n_studies"] *= times
    meta["ecg_shape"][0] *= times
    (target / "cohort.json").write_text(json.dumps(meta, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=4000)
    parser.add_argument("--root", type=Path, required=True, help="working folder (several GB at 40,000 patients)")
    parser.add_argument("--steps", default="simulate,cohort,run", help="comma-separated subset, in order")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--repeat-cohort",
        type=Path,
        default=None,
        metavar="COHORT",
        help="step 'repeat': build ROOT/data/cohort as --times copies of this cohort",
    )
    parser.add_argument("--times", type=int, default=10)
    parser.add_argument("--nice", type=int, default=10, help="niceness of the children (shared machines)")
    args = parser.parse_args()
    data, run_dir = args.root / "data", args.root / "run"
    cli = [sys.executable, "-m", "model_training.cli"]
    report: dict[str, object] = {"benchmark": "train_memory", "patients": args.patients, "cpu_count": os.cpu_count()}
    for step in args.steps.split(","):
        if step == "repeat":
            repeat_cohort(args.repeat_cohort, data / "cohort", args.times)
            report["repeated"] = {"cohort": str(args.repeat_cohort), "times": args.times}
            continue
        if step == "simulate":
            argv = [*cli, "simulate", "--patients", str(args.patients), "--out", str(data),
                    "--workers", str(args.workers), "--no-progress"]  # fmt: skip
        elif step == "cohort":
            argv = [sys.executable, "-c", _BUILD_COHORT, str(data), str(data / "cohort"), str(args.workers)]
        elif step == "epoch":
            argv = [sys.executable, "-c", _READ_EPOCH, str(data / "cohort")]
        elif step == "run":
            config = args.root / "short.yaml"
            config.write_text(SHORT_CONFIG)
            argv = [*cli, "run", "--config", str(config), "--data", str(data), "--out", str(run_dir), "--no-progress"]
        else:
            raise SystemExit(f"unknown step {step!r}")
        report[step] = measure(argv, nice=args.nice)
    cohort_meta = data / "cohort" / "cohort.json"
    if cohort_meta.exists():
        report["n_ecgs"] = json.loads(cohort_meta.read_text())["n_studies"]
        report["ecg_file_mb"] = round((data / "cohort" / "ecg.f32").stat().st_size / 2**20, 1)
        report["clinical_arrays_mb"] = round((data / "cohort" / "arrays.npz").stat().st_size / 2**20, 1)
    report["unix_time"] = int(time.time())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

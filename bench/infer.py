"""Inference throughput of the served model: ECGs per second, eager vs TorchScript vs ONNX Runtime.

    python bench/infer.py                              # a fresh model of the demo size
    python bench/infer.py --artifact out/demo/model    # an exported artifact

Prints one JSON object. Every backend is measured in the same process, side by
side, on the same 10 s ECGs at the model rate, at batch 1 (one study at a time, as
a listener would score) and batch 64 (the nightly batch). ECG/s counts studies,
not windows. On a shared machine, read the figures with ``load_avg_1min_at_end``:
with more runnable processes than cores, multi-threaded torch slows down sharply.

- Fresh model: the ECG encoder and heads of ``model_training/configs/demo.yaml``
  (untrained weights: throughput does not depend on them), ``--n-dx`` diagnoses and
  ``--n-lab`` lab targets. Backends: eager, TorchScript, and ONNX Runtime when the
  ``[onnx]`` extra is installed.
- Artifact: the verified TorchScript module; the eager module is not in an artifact,
  so ``torch_export`` (the ``model.pt2`` program, which runs eagerly) stands in for it
  when the artifact has one, and ONNX Runtime runs ``model.onnx`` when present.

model.pt2 and model.onnx take whole windows only, so the 10 s input is used as is
(4 windows of 2.5 s at 100 Hz).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from integrations.ecg import PreprocessConfig
from model_training.artifact import load_artifact
from model_training.config import DEFAULT_CONFIG, load_config
from model_training.export import ONNX_FILE, PT2_FILE, export_onnx_bytes, script
from model_training.scoring import EcgScoringModule
from model_training.train.builders import ecg_encoder, head

BATCH_SIZES = (1, 64)
DURATION_S = 10.0
DEFAULT_N_DX = 40  # about the curated code set of the simulated cohort
DEFAULT_N_LAB = 20

Runner = Callable[[np.ndarray], tuple[np.ndarray, ...]]


@dataclass(frozen=True, slots=True)
class Measurement:
    backend: str
    batch: int
    ecg_per_s: float
    ms_per_batch: float
    max_abs_diff_vs_first: float  # parity with the first backend measured, same input


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        source, fs_hz, runners = (
            _artifact_runners(args.artifact, args.threads)
            if args.artifact
            else _fresh_runners(args.n_dx, args.n_lab, args.threads, Path(tmp))
        )
        samples = round(DURATION_S * fs_hz)
        results = [m for batch in BATCH_SIZES for m in _measure_all(runners, batch, samples, args.min_time_s)]
    report = {
        "model": source,
        "input": {"duration_s": DURATION_S, "fs_hz": fs_hz, "samples": samples, "leads": 12},
        "threads": args.threads,
        "torch": torch.__version__,
        "onnxruntime": _onnxruntime_version(),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        # Other processes on the cores distort multi-threaded figures the most (OpenMP waits on busy cores).
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        "results": [asdict(m) for m in results],
    }
    print(json.dumps(report, indent=2))
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="artifact directory (default: a fresh demo-size model)")
    parser.add_argument("--n-dx", type=int, default=DEFAULT_N_DX, help="diagnoses of the fresh model")
    parser.add_argument("--n-lab", type=int, default=DEFAULT_N_LAB, help="lab targets of the fresh model")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads, every backend")
    parser.add_argument("--min-time-s", type=float, default=2.0, help="measure each case at least this long")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- backends


def _fresh_runners(n_dx: int, n_lab: int, threads: int, tmp: Path) -> tuple[dict, float, dict[str, Runner]]:
    config = load_config(DEFAULT_CONFIG)
    preprocess = PreprocessConfig()
    module = EcgScoringModule(
        ecg_encoder(config.model, seed=0), head(config.model, n_dx, seed=1), head(config.model, n_lab, seed=2),
        window_samples=preprocess.window_samples, clip_mv=preprocess.clip_mv,
    ).eval()  # fmt: skip
    runners: dict[str, Runner] = {"eager": _torch_runner(module), "torchscript": _torch_runner(script(module))}
    onnx = _onnx_runner_from_module(module, preprocess, threads, tmp)
    if onnx is not None:
        runners["onnxruntime"] = onnx
    parameters = sum(p.numel() for p in module.parameters())
    source = {"source": f"fresh, {DEFAULT_CONFIG.name}", "parameters": parameters, "n_dx": n_dx, "n_lab": n_lab}
    return source, preprocess.fs_hz, runners


def _artifact_runners(path: Path, threads: int) -> tuple[dict, float, dict[str, Runner]]:
    artifact = load_artifact(path)
    runners: dict[str, Runner] = {}
    if (artifact.path / PT2_FILE).exists():
        runners["torch_export"] = _torch_runner(torch.export.load(str(artifact.path / PT2_FILE)).module())
    runners["torchscript"] = _torch_runner(artifact.module)
    if (artifact.path / ONNX_FILE).exists() and _onnxruntime_version():
        runners["onnxruntime"] = _onnx_runner(artifact.path / ONNX_FILE, threads)
    manifest = artifact.manifest
    source = {
        "source": str(path),
        "model": f"{manifest.model_name} {manifest.model_version}",
        "sha256": manifest.model_sha256,
        "n_dx": len(manifest.diagnoses),
        "n_lab": len(manifest.lab_targets),
    }
    return source, manifest.input.fs_hz, runners


def _torch_runner(module: Callable) -> Runner:
    def run(batch: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            return tuple(output.numpy() for output in module(torch.from_numpy(batch)))

    return run


def _onnx_runner_from_module(
    module: EcgScoringModule, preprocess: PreprocessConfig, threads: int, tmp: Path
) -> Runner | None:
    if _onnxruntime_version() is None:
        return None
    example = torch.zeros(2, 12, 2 * preprocess.window_samples)
    path = tmp / ONNX_FILE
    path.write_bytes(export_onnx_bytes(module, example))
    return _onnx_runner(path, threads)


def _onnx_runner(path: Path, threads: int) -> Runner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda batch: tuple(session.run(None, {"ecg_mv": batch}))


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


# ---------------------------------------------------------------- timing


def _measure_all(runners: dict[str, Runner], batch: int, samples: int, min_time_s: float) -> list[Measurement]:
    ecg = np.random.default_rng(0).normal(scale=0.3, size=(batch, 12, samples)).astype(np.float32)
    reference = None
    measurements = []
    for name, run in runners.items():
        outputs = run(ecg)
        if reference is None:
            reference = outputs
        diff = max(float(np.abs(a - b).max()) if a.size else 0.0 for a, b in zip(outputs, reference, strict=True))
        seconds_per_batch = _time(run, ecg, min_time_s)
        measurements.append(Measurement(name, batch, round(batch / seconds_per_batch, 1),
                                        round(1000 * seconds_per_batch, 3), diff))  # fmt: skip
    return measurements


def _time(run: Runner, ecg: np.ndarray, min_time_s: float) -> float:
    """Median seconds per call over repeated rounds, after a warm-up (TorchScript optimises on first calls)."""
    for _ in range(3):
        run(ecg)
    rounds = []
    deadline = time.perf_counter() + min_time_s
    while time.perf_counter() < deadline or len(rounds) < 5:
        started = time.perf_counter()
        run(ecg)
        rounds.append(time.perf_counter() - started)
    return float(np.median(rounds))


if __name__ == "__main__":
    sys.exit(main())

"""A fresh model of the demo size, untrained, exported as the agent takes it: throughput and memory do not depend
on the weights. Shared by the agent benchmarks (``bench/backfill.py``, ``bench/run_once_memory.py``)."""

from __future__ import annotations

from pathlib import Path

import torch

from integrations.ecg import PreprocessConfig
from model_training.config import DEFAULT_CONFIG, load_config
from model_training.data.labels import LabTarget
from model_training.evaluate import Estimate, OperatingThresholds
from model_training.export import export_artifact
from model_training.release import OperatingPoint, ReleaseTable, release_entry, release_rule
from model_training.scoring import EcgScoringModule
from model_training.train.builders import ecg_encoder, head

VERSION = "bench-1.0.0"
DX_CODES = ("I48", "E875", "I509", "N183")
LAB_TARGETS = (LabTarget("potassium", "high", 5.1), LabTarget("hemoglobin", "low", 12.0))


def fresh_demo_artifact(out_dir: Path) -> Path:
    """The demo config's encoder and heads, untrained, exported under ``out_dir`` as version :data:`VERSION`."""
    config = load_config(DEFAULT_CONFIG)
    preprocess = PreprocessConfig()
    module = EcgScoringModule(
        ecg_encoder(config.model, seed=0), head(config.model, len(DX_CODES), seed=1),
        head(config.model, len(LAB_TARGETS), seed=2), window_samples=preprocess.window_samples,
    ).eval()  # fmt: skip
    rule = release_rule(min_auroc_ci_low=0.8, min_ppv=0.3, min_positives=10, n_bootstrap=20, seed=0)
    entry = release_entry(Estimate(0.92, 0.86, 0.97), OperatingPoint(0.7, 0.9, 0.42, 0.1, 20, 200), rule)
    no_value = {"value": None}
    metrics = {
        "diagnosis": {"macro_auroc": {"ours": no_value}, "delta_ours_minus_ecg_only": no_value, "gap_closed": no_value},
        "labs": {"macro_auroc": {"ours": no_value}},
    }
    return export_artifact(
        module, out_dir=out_dir, model_name="bench-demo-size", model_version=VERSION, dx_labels=DX_CODES,
        lab_targets=LAB_TARGETS,
        thresholds=OperatingThresholds("bench", dict.fromkeys(DX_CODES, 0.5), {t.name: 0.5 for t in LAB_TARGETS}),
        release=ReleaseTable(rule, dict.fromkeys(DX_CODES, entry), {t.name: entry for t in LAB_TARGETS}),
        preprocess=preprocess, metrics=metrics, data_fingerprint="bench",
        example_input=torch.zeros(1, 12, 2 * preprocess.window_samples),
    )  # fmt: skip

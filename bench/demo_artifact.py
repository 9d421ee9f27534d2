"""A fresh model of the demo size, untrained, exported as the agent takes it, shared by the agent benchmarks
(``bench/e2e.py``, ``bench/backfill.py``, ``bench/run_once_memory.py``): throughput and memory do not depend on the
weights, but they do on the outputs, so it has the demo model's outputs and gives every ECG the demo night's
positive, charted and explained findings."""

from __future__ import annotations

from pathlib import Path

import torch

from integrations.ecg import PreprocessConfig
from model_training.artifact import LabAssociation
from model_training.config import DEFAULT_CONFIG, load_config
from model_training.data.catalogue import LABS
from model_training.data.labels import LabTarget
from model_training.evaluate import Estimate, OperatingThresholds
from model_training.export import export_artifact
from model_training.release import OperatingPoint, ReleaseTable, release_entry, release_rule
from model_training.scoring import EcgScoringModule
from model_training.simulator_calibration import load_reference
from model_training.train.builders import ecg_encoder, head

#: The demo model's outputs, and what the demo night has per ECG (README: 15.4 positives, 2.1 charted).
N_DX, N_LAB = 82, 45
POSITIVE_DX, POSITIVE_LAB, CHARTED_POSITIVE, CHARTED = 10, 5, 2, 17
VERSION = "bench-1.0.0"


def fresh_demo_artifact(out_dir: Path) -> Path:
    """A demo-size model, untrained, whose thresholds give every ECG the demo night's positives and charted findings.

    The first POSITIVE_DX diagnoses and POSITIVE_LAB lab targets have threshold 0 (always positive), the
    rest 1 (never); the first CHARTED_POSITIVE diagnoses are charted, and so are CHARTED − CHARTED_POSITIVE
    of the never-positive ones; each positive diagnosis is explained by the positive lab targets.
    """
    config = load_config(DEFAULT_CONFIG)
    preprocess = PreprocessConfig()
    dx_codes = tuple(sorted(load_reference()))[:N_DX]
    labs = [LabTarget(lab.key, direction, bound) for lab in LABS
            for direction, bound in (("low", lab.ref_low), ("high", lab.ref_high)) if bound][:N_LAB]  # fmt: skip
    module = EcgScoringModule(
        ecg_encoder(config.model, seed=0), head(config.model, N_DX, seed=1), head(config.model, N_LAB, seed=2),
        window_samples=preprocess.window_samples, clip_mv=preprocess.clip_mv,
    ).eval()  # fmt: skip
    rule = release_rule(min_auroc_ci_low=0.8, min_ppv=0.3, min_positives=10, n_bootstrap=20, seed=0)
    charted = release_entry(Estimate(0.92, 0.86, 0.97), OperatingPoint(0.7, 0.9, 0.42, 0.1, 20, 200), rule)
    stored = release_entry(Estimate(0.70, 0.60, 0.80), OperatingPoint(0.5, 0.8, 0.20, 0.1, 20, 200), rule)
    charted_dx = set(dx_codes[:CHARTED_POSITIVE] + dx_codes[POSITIVE_DX : POSITIVE_DX + CHARTED - CHARTED_POSITIVE])
    positive_labs = [target.name for target in labs[:POSITIVE_LAB]]
    thresholds = OperatingThresholds(
        "bench",
        {code: 0.0 if i < POSITIVE_DX else 1.0 for i, code in enumerate(dx_codes)},
        {target.name: 0.0 if i < POSITIVE_LAB else 1.0 for i, target in enumerate(labs)},
    )
    no_value = {"value": None}
    metrics = {
        "diagnosis": {"macro_auroc": {"ours": no_value}, "delta_ours_minus_ecg_only": no_value, "gap_closed": no_value},
        "labs": {"macro_auroc": {"ours": no_value}},
    }
    return export_artifact(
        module, out_dir=out_dir, model_name="bench-demo-size", model_version=VERSION, dx_labels=dx_codes,
        lab_targets=labs,
        thresholds=thresholds,
        release=ReleaseTable(rule, {code: charted if code in charted_dx else stored for code in dx_codes},
                             {t.name: stored for t in labs}),
        explanations={code: [LabAssociation(lab, 2.0, 20) for lab in positive_labs] for code in dx_codes[:POSITIVE_DX]},
        preprocess=preprocess, metrics=metrics, data_fingerprint="bench",
        example_input=torch.zeros(1, 12, 2 * preprocess.window_samples),
    )  # fmt: skip

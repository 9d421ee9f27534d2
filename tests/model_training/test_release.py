"""The release rule: chart a label only when its validation AUROC's lower CI bound and its PPV clear the floors."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from model_training.config import TrainConfig, load_config
from model_training.evaluate import Estimate, ModelScores, OperatingThresholds, RunPredictions
from model_training.release import (
    OperatingPoint,
    ReleaseTable,
    decide,
    operating_point,
    release_entry,
    release_rule,
    release_table,
)

RULE = release_rule(min_auroc_ci_low=0.80, min_ppv=0.30, min_positives=10, n_bootstrap=200, seed=0)


@pytest.mark.parametrize(
    ("ci_low", "ppv", "n_positive", "charted", "reason"),
    [
        (0.85, 0.40, 25, True, "charted: AUROC CI low 0.850 >= 0.80, PPV 0.400 >= 0.30, 25 positives"),
        (0.80, 0.30, 10, True, "charted"),  # the floors themselves pass
        (0.79, 0.90, 25, False, "stored only: AUROC CI low 0.790 < 0.80"),
        (0.95, 0.12, 25, False, "stored only: PPV 0.120 < 0.30"),
        (0.70, 0.10, 25, False, "stored only: AUROC CI low 0.700 < 0.80; PPV 0.100 < 0.30"),
        (0.94, 0.50, 1, False, "stored only: 1 positives < 10"),  # a one-positive CI collapses onto its point
        (None, 0.50, 0, False, "AUROC CI low undefined"),  # no positive in the fold
        (0.90, None, 25, False, "PPV undefined"),  # nothing called positive
    ],
)
def test_the_rule_on_hand_made_metrics(ci_low, ppv, n_positive, charted, reason):
    decided, why = decide(ci_low, ppv, n_positive, RULE)
    assert decided is charted and reason in why


def test_the_floors_are_settings():
    lenient = release_rule(min_auroc_ci_low=0.6, min_ppv=0.1, min_positives=2, n_bootstrap=10, seed=0)
    assert decide(0.7, 0.2, 5, lenient)[0] and not decide(0.7, 0.2, 5, RULE)[0]


def test_operating_point_counts_calls_at_or_above_the_threshold_and_skips_unknown_labels():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, np.nan, np.nan])
    prob = np.array([0.9, 0.6, 0.2, 0.7, 0.5, 0.1, 0.1, 0.1, 0.99, 0.99])
    # called at 0.5: 0.9, 0.6 (true), 0.7, 0.5 (false); missed 0.2
    assert operating_point(y, prob, 0.5) == OperatingPoint(2 / 3, 3 / 5, 2 / 4, 3 / 8, 3, 8)
    nothing_called = operating_point(y, prob, 1.0)
    assert nothing_called.ppv is None and nothing_called.sensitivity == 0.0


def test_an_entry_keeps_the_numbers_that_decided_it():
    entry = release_entry(Estimate(0.9, 0.84, 0.95), OperatingPoint(0.6, 0.9, 0.35, 0.1, 30, 300), RULE)
    assert (entry.auroc, entry.auroc_ci_low, entry.auroc_ci_high) == (0.9, 0.84, 0.95)
    assert (entry.sensitivity, entry.specificity, entry.ppv, entry.prevalence) == (0.6, 0.9, 0.35, 0.1)
    assert (entry.n_positive, entry.n_known, entry.charted) == (30, 300, True)
    undefined = release_entry(Estimate(np.nan, np.nan, np.nan), OperatingPoint(None, 1.0, None, 0.0, 0, 300), RULE)
    assert undefined.auroc is None and not undefined.charted


def validation_fold(n: int = 600, seed: int = 0) -> RunPredictions:
    """I48 separates well; K219 barely; a lab target separates well but is called too broadly."""
    rng = np.random.default_rng(seed)
    y_dx = (rng.random((n, 2)) < 0.15).astype(np.uint8)
    y_lab = (rng.random((n, 1)) < 0.15).astype(np.float32)
    y_lab[: n // 4] = np.nan
    logit = np.c_[4.0 * y_dx[:, 0], 0.4 * y_dx[:, 1]] + rng.normal(size=(n, 2)) - 2.0
    dx_prob = 1.0 / (1.0 + np.exp(-logit))
    lab_prob = 1.0 / (1.0 + np.exp(-(4.0 * np.nan_to_num(y_lab) + rng.normal(size=(n, 1)) - 2.0)))
    scores = ModelScores(dx_prob, dx_prob, lab_prob, lab_prob)
    return RunPredictions(("I48", "K219"), ("potassium_high",), y_dx, y_dx, y_lab, y_lab,
                          {"ecg_only": scores, "ours": scores, "multimodal": scores})  # fmt: skip


def test_the_table_charts_the_label_that_separates_and_stores_the_one_that_does_not():
    predictions = validation_fold()
    # a threshold of 0.0 calls everyone: PPV = prevalence, below the floor, however good the AUROC
    thresholds = OperatingThresholds("test", {"I48": 0.5, "K219": 0.5}, {"potassium_high": 0.0})
    table = release_table(predictions, thresholds, RULE)
    strong, weak, broad = table.diagnosis["I48"], table.diagnosis["K219"], table.labs["potassium_high"]
    assert strong.charted and strong.auroc_ci_low >= 0.80 and strong.ppv >= 0.30
    assert not weak.charted and weak.auroc_ci_low < 0.80
    assert not broad.charted and broad.auroc_ci_low >= 0.80 and broad.ppv == pytest.approx(broad.prevalence)
    assert broad.n_known == 450  # the studies whose potassium was unknown do not count
    assert strong.auroc_ci_low < strong.auroc < strong.auroc_ci_high


def test_the_table_round_trips_through_json():
    table = release_table(validation_fold(), OperatingThresholds("t", {"I48": 0.5, "K219": 0.5},
                                                                 {"potassium_high": 0.5}), RULE)  # fmt: skip
    assert ReleaseTable.from_dict(json.loads(json.dumps(table.to_dict(), allow_nan=False))) == table


def test_behaviour_and_status_codes_are_stored_only_however_well_they_score():
    predictions = validation_fold()
    smoking = dataclasses.replace(predictions, dx_codes=("F1721", "K219"))  # the well-separated label, as F17.21
    thresholds = OperatingThresholds("t", {"F1721": 0.5, "K219": 0.5}, {"potassium_high": 0.5})
    table = release_table(smoking, thresholds, RULE, never_charted=("F", "Z"))
    excluded = table.diagnosis["F1721"]
    assert not excluded.charted
    assert excluded.reason.startswith("stored only: codes under F are never charted from an ECG")
    assert excluded.auroc_ci_low >= 0.80 and excluded.ppv >= 0.30  # its figures stay in the table
    assert "charted: AUROC CI low" in excluded.reason  # and so does what the statistics alone decided
    assert release_table(smoking, thresholds, RULE).diagnosis["F1721"].charted  # without the exclusion


def test_the_training_config_excludes_icd10_chapters_f_and_z_by_default():
    assert load_config(Path("model_training/configs/demo.yaml")).release.never_charted == ("F", "Z")
    assert TrainConfig().release.never_charted == ("F", "Z")

"""Metrics: the fast AUROC against sklearn, bootstrap CIs, paired deltas, gap closed, masked lab labels."""

import dataclasses
import json
import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from model_training.evaluate import (
    FALLBACK_THRESHOLD,
    METRICS_FILE,
    THRESHOLD_RULE,
    ModelScores,
    OperatingThresholds,
    RunPredictions,
    auroc,
    bootstrap_weights,
    evaluate_run,
    gap_closed,
    max_f1_threshold,
    weighted_auroc,
)


def noisy_scores(y: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities that separate the classes more as ``strength`` grows."""
    return 1.0 / (1.0 + np.exp(-(strength * np.nan_to_num(y) + rng.normal(size=y.shape))))


def make_predictions(
    n_val: int = 300, n_test: int = 400, n_dx: int = 8, n_lab: int = 4, strengths=(0.5, 1.5, 3.0), seed: int = 0
) -> RunPredictions:
    rng = np.random.default_rng(seed)

    def labels(n: int) -> tuple[np.ndarray, np.ndarray]:
        y_lab = (rng.random((n, n_lab)) < 0.2).astype(np.float32)
        y_lab[rng.random((n, n_lab)) < 0.4] = np.nan
        return (rng.random((n, n_dx)) < 0.15).astype(np.uint8), y_lab

    (y_dx_val, y_lab_val), (y_dx_test, y_lab_test) = labels(n_val), labels(n_test)
    models = {}
    for name, strength in zip(("ecg_only", "ours", "multimodal"), strengths, strict=True):
        with_labs = name != "ecg_only"
        models[name] = ModelScores(
            noisy_scores(y_dx_val, strength, rng), noisy_scores(y_dx_test, strength, rng),
            noisy_scores(y_lab_val, strength, rng) if with_labs else None,
            noisy_scores(y_lab_test, strength, rng) if with_labs else None,
        )  # fmt: skip
    return RunPredictions(tuple(f"I{10 + j}" for j in range(n_dx)), tuple(f"lab{j}_high" for j in range(n_lab)),
                          y_dx_val, y_dx_test, y_lab_val, y_lab_test, models)  # fmt: skip


# ---------------------------------------------------------------- AUROC


@pytest.mark.parametrize("decimals", [None, 1])  # continuous scores, and heavy ties
def test_fast_auroc_equals_sklearn(decimals):
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = (rng.random(300) < rng.uniform(0.02, 0.5)).astype(int)
        y[:2] = (0, 1)
        score = rng.normal(size=300) + y
        score = score if decimals is None else np.round(score, decimals)
        assert auroc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)


def test_weighted_auroc_equals_sklearn_on_the_resampled_studies():
    rng = np.random.default_rng(2)
    y = (rng.random(200) < 0.3).astype(int)
    score = np.round(rng.normal(size=200) + y, 1)
    weights = bootstrap_weights(200, 5, seed=3)
    for row, value in zip(weights, weighted_auroc(y, score, weights), strict=True):
        drawn = np.repeat(np.arange(200), row.astype(int))
        assert value == pytest.approx(roc_auc_score(y[drawn], score[drawn]), abs=1e-6)


def test_bootstrap_weights_are_resamples_of_every_study_count():
    weights = bootstrap_weights(50, 100, seed=0)
    assert weights.shape == (100, 50)
    assert (weights.sum(axis=1) == 50).all() and (weights >= 0).all()
    np.testing.assert_array_equal(weights, bootstrap_weights(50, 100, seed=0))


def test_auroc_is_nan_with_one_class_and_ignores_nan_labels():
    assert np.isnan(auroc(np.zeros(10), np.arange(10.0)))
    y = np.array([0, 1, np.nan, 0, 1, np.nan, 1])
    score = np.array([0.1, 0.8, 0.99, 0.3, 0.2, 0.0, 0.7])
    known = ~np.isnan(y)
    assert auroc(y, score) == pytest.approx(roc_auc_score(y[known], score[known]))


# ---------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("evaluate")
    predictions = make_predictions()
    return predictions, evaluate_run(predictions, out_dir, n_bootstrap=300, seed=0), out_dir


def test_metrics_json_is_written_with_the_issue_keys(run):
    _, metrics, out_dir = run
    written = json.loads((out_dir / METRICS_FILE).read_text())
    assert written == metrics
    for name in ("ecg_only", "ours", "multimodal"):
        assert set(written["diagnosis"]["macro_auroc"][name]) == {"value", "ci_low", "ci_high"}
    assert set(written["diagnosis"]["delta_ours_minus_ecg_only"]) == {"value", "ci_low", "ci_high"}
    assert {"value", "ci_low", "ci_high"} <= set(written["diagnosis"]["gap_closed"])
    assert set(written["labs"]["macro_auroc"]) == {"ours", "multimodal"}  # ecg_only has no lab heads
    assert set(written["per_label"]["diagnosis"]["I10"]["ours"]) == {"auroc", "auprc"}
    assert set(written["per_label"]["labs"]["lab0_high"]) >= {"ours", "multimodal", "n_positive", "n_known"}


def test_confidence_intervals_bracket_the_point_estimates(run):
    _, metrics, _ = run
    estimates = [*metrics["diagnosis"]["macro_auroc"].values(), *metrics["labs"]["macro_auroc"].values(),
                 metrics["diagnosis"]["delta_ours_minus_ecg_only"], metrics["diagnosis"]["gap_closed"]]  # fmt: skip
    for estimate in estimates:
        assert estimate["ci_low"] <= estimate["value"] <= estimate["ci_high"]
        assert estimate["ci_low"] < estimate["ci_high"]


def test_paired_delta_excludes_zero_when_ours_is_clearly_better(run):
    _, metrics, _ = run
    delta = metrics["diagnosis"]["delta_ours_minus_ecg_only"]
    assert delta["ci_low"] > 0
    dx = metrics["diagnosis"]["macro_auroc"]
    assert delta["value"] == pytest.approx(dx["ours"]["value"] - dx["ecg_only"]["value"])


def test_paired_delta_of_a_model_with_itself_is_exactly_zero(tmp_path):
    predictions = make_predictions(n_dx=3, n_lab=2)
    predictions.models["ours"] = predictions.models["ecg_only"]
    delta = evaluate_run(predictions, tmp_path, n_bootstrap=50)["diagnosis"]["delta_ours_minus_ecg_only"]
    assert delta == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}


def test_gap_closed_is_the_share_of_the_multimodal_gain(run):
    _, metrics, _ = run
    dx = {name: e["value"] for name, e in metrics["diagnosis"]["macro_auroc"].items()}
    expected = (dx["ours"] - dx["ecg_only"]) / (dx["multimodal"] - dx["ecg_only"])
    assert metrics["diagnosis"]["gap_closed"]["value"] == pytest.approx(expected)
    assert gap_closed(0.795, 0.768, 0.826) == pytest.approx(0.4655, abs=1e-4)  # the paper's anchor numbers
    assert np.isnan(gap_closed(0.8, 0.8, 0.79))  # multimodal no better: undefined, not a huge ratio


def test_nan_lab_labels_are_ignored_per_target(run):
    predictions, metrics, _ = run
    y, score = predictions.y_lab_test[:, 1], predictions.models["ours"].lab_prob_test[:, 1]
    known = ~np.isnan(y)
    entry = metrics["per_label"]["labs"]["lab1_high"]
    assert entry["n_known"] == known.sum() < len(y)
    assert entry["ours"]["auroc"] == pytest.approx(roc_auc_score(y[known], score[known]))


def test_per_label_aurocs_equal_sklearn(run):
    predictions, metrics, _ = run
    for j, code in enumerate(predictions.dx_codes):
        for name, scores in predictions.models.items():
            expected = roc_auc_score(predictions.y_dx_test[:, j], scores.dx_prob_test[:, j])
            assert metrics["per_label"]["diagnosis"][code][name]["auroc"] == pytest.approx(expected)


def test_a_label_with_one_class_on_test_is_left_out_and_written_as_null(tmp_path):
    predictions = make_predictions(n_dx=4, n_lab=2)
    predictions.y_dx_test[:, 2] = 0
    metrics = evaluate_run(predictions, tmp_path, n_bootstrap=50)
    assert metrics["diagnosis"]["n_labels_scored"] == 3
    assert metrics["per_label"]["diagnosis"]["I12"]["ours"] == {"auroc": None, "auprc": None}
    per_label = [metrics["per_label"]["diagnosis"][c]["ours"]["auroc"] for c in ("I10", "I11", "I13")]
    assert metrics["diagnosis"]["macro_auroc"]["ours"]["value"] == pytest.approx(np.mean(per_label))


def test_thresholds_maximise_f1_on_validation(run):
    y = np.array([0, 0, 0, 1, 1, 0, 1])
    score = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.75, 0.9])
    assert max_f1_threshold(y, score) == 0.6  # all three positives, one false positive: F1 6/7
    assert max_f1_threshold(np.zeros(5), np.arange(5.0)) == FALLBACK_THRESHOLD
    predictions, metrics, _ = run
    thresholds = OperatingThresholds.from_metrics(metrics, "ours")
    assert thresholds.rule == THRESHOLD_RULE
    assert set(thresholds.diagnosis) == set(predictions.dx_codes) and set(thresholds.labs) == set(
        predictions.lab_targets
    )
    assert metrics["thresholds"]["ecg_only"]["labs"] == {}


def test_a_label_the_model_cannot_separate_is_not_called_in_everyone():
    # A useless score: plain max-F1 would call all 1,000 studies positive (F1 = 2p / (1 + p)).
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.05).astype(float)
    score = rng.random(1000)
    threshold = max_f1_threshold(y, score)
    assert (score >= threshold).sum() <= 3 * y.sum()


def test_the_full_size_bootstrap_is_fast(tmp_path):
    predictions = make_predictions(n_val=850, n_test=850, n_dx=60, n_lab=22)
    started = time.perf_counter()
    evaluate_run(predictions, tmp_path, n_bootstrap=1000)
    assert time.perf_counter() - started < 30.0  # about 1 s on one core; sklearn in a loop takes minutes


def test_predictions_with_mismatched_shapes_are_refused():
    predictions = make_predictions(n_dx=3, n_lab=2)
    scores = predictions.models["ours"]
    wrong = predictions.models | {"ours": ModelScores(scores.dx_prob_val, scores.dx_prob_test[:, :2])}
    with pytest.raises(ValueError, match=r"ours\.dx_prob_test"):
        dataclasses.replace(predictions, models=wrong)


def test_gap_closed_is_null_with_no_interval_when_multimodal_gains_nothing(tmp_path):
    predictions = make_predictions(n_dx=3, n_lab=2)
    predictions.models["multimodal"] = predictions.models["ecg_only"]
    gap = evaluate_run(predictions, tmp_path, n_bootstrap=50)["diagnosis"]["gap_closed"]
    assert gap == {"value": None, "ci_low": None, "ci_high": None, "replicates_dropped": 50}

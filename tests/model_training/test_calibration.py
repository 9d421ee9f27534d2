"""Calibration: Platt maps fit on validation lower the ECE, keep the ranking, and run identically in TorchScript."""

import numpy as np
import pytest
import torch

from model_training.calibration import (
    LabelCalibration,
    PlattMap,
    ReliabilityCurve,
    expected_calibration_error,
    fit_platt,
    mean_ece,
)
from model_training.evaluate import auroc
from model_training.export import script
from model_training.scoring import PlattCalibration


def overconfident(n: int, prevalence: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true log-odds z, and a model that says 3z + 1.5: too sure and too high.

    The map that undoes it is slope 1/3, intercept -0.5.
    """
    rng = np.random.default_rng(seed)
    true_logit = np.log(prevalence / (1 - prevalence)) + 1.5 * rng.normal(size=n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-true_logit))).astype(np.float64)
    return y, 1.0 / (1.0 + np.exp(-(3.0 * true_logit + 1.5)))


def test_a_fit_on_validation_lowers_the_ece_on_held_out_data():
    y_val, p_val = overconfident(2000, 0.1, seed=0)
    y_test, p_test = overconfident(2000, 0.1, seed=1)
    platt = fit_platt(y_val, p_val)
    before, after = expected_calibration_error(y_test, p_test), expected_calibration_error(y_test, platt.apply(p_test))
    assert before > 0.08 and after < before / 4
    assert platt.slope == pytest.approx(1 / 3, abs=0.05)  # it undoes the distortion it was shown
    assert platt.intercept == pytest.approx(-0.5, abs=0.2)


def test_the_map_keeps_the_ranking_so_auroc_is_unchanged():
    y, p = overconfident(1000, 0.2, seed=2)
    calibrated = fit_platt(y, p).apply(p)
    assert auroc(y, calibrated) == pytest.approx(auroc(y, p), abs=1e-12)


def test_a_label_without_both_classes_keeps_the_identity():
    assert fit_platt(np.zeros(50), np.linspace(0.01, 0.99, 50)) == PlattMap()
    assert fit_platt(np.full(50, np.nan), np.linspace(0.01, 0.99, 50)) == PlattMap()


def test_unknown_labels_are_ignored_by_the_fit_and_the_ece():
    y, p = overconfident(1000, 0.2, seed=3)
    with_unknown = np.r_[y, np.full(200, np.nan)]
    p_with_unknown = np.r_[p, np.full(200, 0.99)]
    assert fit_platt(with_unknown, p_with_unknown) == fit_platt(y, p)
    assert expected_calibration_error(with_unknown, p_with_unknown) == expected_calibration_error(y, p)


def test_ece_is_the_count_weighted_gap_per_equal_width_bin():
    # bin [0.1, 0.2): 4 studies, mean p 0.15, 1 positive (0.25); bin [0.9, 1.0]: 2 studies, mean p 0.95, 2 positives
    y = np.array([1, 0, 0, 0, 1, 1], dtype=np.float64)
    p = np.array([0.15, 0.15, 0.15, 0.15, 0.95, 0.95])
    assert expected_calibration_error(y, p) == pytest.approx(4 / 6 * 0.10 + 2 / 6 * 0.05)
    assert mean_ece(np.c_[y, 1 - y], np.c_[p, p]) == pytest.approx(
        (expected_calibration_error(y, p) + expected_calibration_error(1 - y, p)) / 2
    )


def test_the_pooled_reliability_curve_leaves_out_empty_bins():
    curve = ReliabilityCurve.pooled(np.array([[1.0, 0.0], [0.0, np.nan]]), np.array([[0.95, 0.05], [0.05, 0.5]]))
    assert curve == ReliabilityCurve((0.05, 0.95), (0.0, 1.0), (2, 1))


def test_the_map_inside_torchscript_equals_the_eager_and_the_numpy_one():
    calibration = LabelCalibration({"I50": PlattMap(0.4, -1.2), "I48": PlattMap(2.5, 0.7)}, {"k": PlattMap(1.0, 3.0)})
    dx_module, _ = calibration.modules()
    scripted = script(dx_module)
    prob = torch.rand(64, 2)
    prob[0] = torch.tensor([0.0, 1.0])  # the clamp keeps the ends finite
    eager = dx_module(prob)
    assert torch.isfinite(eager).all()
    assert (scripted(prob) - eager).abs().max().item() <= 1e-6
    assert np.abs(eager.numpy() - calibration.apply_diagnosis(prob.numpy())).max() <= 1e-5


def test_a_saved_calibration_loads_back_and_orders_itself_like_the_model(tmp_path):
    calibration = LabelCalibration({"I50": PlattMap(0.4, -1.2), "I48": PlattMap(2.5, 0.7)}, {"k": PlattMap(1.0, 3.0)})
    calibration.save(tmp_path / "calibration.json")
    loaded = LabelCalibration.load(tmp_path / "calibration.json")
    assert loaded == calibration
    assert list(loaded.in_order(("I48", "I50"), ("k",)).diagnosis) == ["I48", "I50"]
    with pytest.raises(KeyError, match="I10"):
        loaded.in_order(("I48", "I50", "I10"), ("k",))


def test_mismatched_slope_and_intercept_are_refused():
    with pytest.raises(ValueError, match="slope"):
        PlattCalibration(torch.ones(3), torch.zeros(2))

"""EcgScoringModule: the exported model's preprocessing, windowing and TorchScript parity."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from integrations.ecg import interpolate_nans
from model_training.scoring import EcgScoringModule, PlattCalibration, fill_nans

WINDOW = 250


def tiny_scoring(n_dx: int = 5, n_lab: int = 3, seed: int = 0) -> EcgScoringModule:
    """A tiny conv encoder and linear heads: the shape of the real model, at no cost."""
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Conv1d(12, 8, 7, stride=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten())
    return EcgScoringModule(encoder, nn.Linear(8, n_dx), nn.Linear(8, n_lab), window_samples=WINDOW).eval()


def scripted(module: EcgScoringModule) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.jit.script(module)


def test_outputs_have_the_contract_shapes():
    dx_prob, lab_prob, embedding = tiny_scoring()(torch.randn(4, 12, 2 * WINDOW))
    assert dx_prob.shape == (4, 5) and lab_prob.shape == (4, 3) and embedding.shape == (4, 8)
    assert ((dx_prob > 0) & (dx_prob < 1)).all() and ((lab_prob > 0) & (lab_prob < 1)).all()


def test_two_windows_give_the_mean_of_each_window_alone():
    module = tiny_scoring()
    ecg = torch.randn(3, 12, 2 * WINDOW)
    first, second = module(ecg[..., :WINDOW]), module(ecg[..., WINDOW:])
    for both, one, two in zip(module(ecg), first, second, strict=True):
        torch.testing.assert_close(both, (one + two) / 2)


def test_the_remainder_after_the_last_whole_window_is_dropped():
    module = tiny_scoring()
    ecg = torch.randn(2, 12, 2 * WINDOW + 117)
    for with_tail, without in zip(module(ecg), module(ecg[..., : 2 * WINDOW]), strict=True):
        torch.testing.assert_close(with_tail, without)


def test_each_study_is_averaged_over_its_own_windows_only():
    module = tiny_scoring()
    ecg = torch.randn(3, 12, 3 * WINDOW)
    batched = module(ecg)
    for i in range(3):
        for output, alone in zip(batched, module(ecg[i : i + 1]), strict=True):
            torch.testing.assert_close(output[i : i + 1], alone)


def test_amplitudes_beyond_the_clip_are_clipped():
    module = tiny_scoring()
    ecg = torch.randn(1, 12, WINDOW)
    ecg[0, 0, :50] = 10.0
    clipped = ecg.clamp(-3.0, 3.0)
    for raw, expected in zip(module(ecg), module(clipped), strict=True):
        torch.testing.assert_close(raw, expected)


def test_nan_filling_matches_the_shared_numpy_preprocessing():
    signal = torch.randn(2, 12, 300, dtype=torch.float64)
    signal[0, 0, 10:20] = float("nan")  # inside: linear
    signal[0, 1, :7] = float("nan")  # leading edge: first known sample
    signal[1, 2, -5:] = float("nan")  # trailing edge: last known sample
    signal[1, 3] = float("nan")  # all missing: zeros
    signal[1, 4, ::2] = float("nan")  # every other sample
    expected = interpolate_nans(signal.numpy().reshape(-1, 300)).reshape(2, 12, 300)
    np.testing.assert_allclose(fill_nans(signal).numpy(), expected, atol=1e-12)


def test_an_ecg_with_nans_scores_to_finite_probabilities():
    ecg = torch.randn(1, 12, WINDOW)
    ecg[0, 5, 30:90] = float("nan")
    ecg[0, 7] = float("nan")
    assert all(torch.isfinite(output).all() for output in tiny_scoring()(ecg))


@pytest.mark.parametrize("shape", [(1, 12, WINDOW - 1), (1, 11, WINDOW), (12, WINDOW)])
def test_input_outside_the_contract_is_refused(shape):
    with pytest.raises(ValueError):
        tiny_scoring()(torch.randn(*shape))


def test_scripted_module_matches_eager_within_1e_5():
    module = tiny_scoring()
    ecg = torch.randn(5, 12, 4 * WINDOW + 30)
    ecg[1, 2, 100:130] = float("nan")
    for eager, script in zip(module(ecg), scripted(module)(ecg), strict=True):
        assert (eager - script).abs().max().item() <= 1e-5


def test_scripted_module_refuses_a_too_short_ecg():
    with pytest.raises(torch.jit.Error, match="shorter than one model window"):
        scripted(tiny_scoring())(torch.randn(1, 12, WINDOW - 1))


def test_a_model_without_lab_outputs_still_scores():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Initializing zero-element tensors", UserWarning)
        module = tiny_scoring(n_lab=0)
    _, lab_prob, _ = scripted(module)(torch.randn(2, 12, 2 * WINDOW))
    assert lab_prob.shape == (2, 0)


def test_the_calibration_maps_the_window_averaged_probabilities_and_survives_scripting():
    raw = tiny_scoring()
    dx_map = PlattCalibration(torch.tensor([0.5, 1.0, 2.0, 0.3, 1.5]), torch.tensor([-1.0, 0.0, 0.5, 2.0, -0.2]))
    lab_map = PlattCalibration(torch.tensor([0.7, 1.2, 0.9]), torch.tensor([0.1, -0.4, 1.0]))
    calibrated = raw.with_calibration(dx_map, lab_map)
    ecg = torch.randn(3, 12, 3 * WINDOW)
    raw_dx, raw_lab, raw_embedding = raw(ecg)
    dx_prob, lab_prob, embedding = calibrated(ecg)
    assert torch.allclose(dx_prob, dx_map(raw_dx)) and torch.allclose(lab_prob, lab_map(raw_lab))
    assert torch.equal(embedding, raw_embedding)
    for eager, script in zip(calibrated(ecg), scripted(calibrated)(ecg), strict=True):
        assert (eager - script).abs().max().item() <= 1e-5

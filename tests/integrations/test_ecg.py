"""The canonical record and the one preprocessing function shared by training and serving."""

from datetime import datetime

import numpy as np
import pytest

from integrations.ecg import (
    MIMIC_FILE_LEAD_ORDER,
    MODEL_LEAD_ORDER,
    EcgRecord,
    PreprocessConfig,
    canonical_lead_name,
    eval_windows,
    interpolate_nans,
    preprocess,
    random_crop,
    resample,
)
from integrations.errors import InvalidEcgError, MissingLeadsError


def _record(signal: np.ndarray, fs_hz: float = 500.0, leads=MODEL_LEAD_ORDER) -> EcgRecord:
    return EcgRecord(record_id="r1", signal_mv=signal, fs_hz=fs_hz, lead_names=tuple(leads),
                     acquired_at=datetime(2150, 1, 1))  # fmt: skip


def test_lead_aliases_map_onto_the_model_names():
    assert canonical_lead_name("AVR") == "aVR"
    assert canonical_lead_name(" avf ") == "aVF"
    assert canonical_lead_name("MDC_ECG_LEAD_V3") == "V3"
    assert canonical_lead_name("X") == "X"


def test_record_rejects_shape_rate_and_duplicate_leads():
    with pytest.raises(InvalidEcgError, match="12 signal rows but 2 lead names"):
        _record(np.zeros((12, 10)), leads=("I", "II"))
    with pytest.raises(InvalidEcgError, match="sampling rate must be positive"):
        _record(np.zeros((12, 10)), fs_hz=0.0)
    with pytest.raises(InvalidEcgError, match="duplicate lead names"):
        _record(np.zeros((2, 10)), leads=("I", "I"))


def test_preprocess_puts_file_order_into_model_order():
    file_signal = np.arange(12, dtype=float)[:, None] * np.ones((12, 500))
    out = preprocess(_record(file_signal / 10, fs_hz=100.0, leads=MIMIC_FILE_LEAD_ORDER))
    # In the file aVF is row 4 and aVL row 5; the model wants aVL before aVF.
    np.testing.assert_allclose(out[:, 0], [0, 0.1, 0.2, 0.3, 0.5, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1], atol=1e-6)


def test_preprocess_resamples_to_the_model_rate_from_any_rate():
    for fs_hz in (250.0, 360.0, 500.0, 1000.0):
        t = np.arange(int(10 * fs_hz)) / fs_hz
        signal = np.tile(np.sin(2 * np.pi * 1.0 * t), (12, 1))
        out = preprocess(_record(signal, fs_hz=fs_hz))
        assert out.shape == (12, 1000) and out.dtype == np.float32
        expected = np.sin(2 * np.pi * np.arange(1000) / 100.0)
        np.testing.assert_allclose(out[0, 50:-50], expected[50:-50], atol=0.02)


def test_preprocess_clips_to_three_millivolts_and_interpolates_nans():
    signal = np.zeros((12, 5000))
    signal[0, 100:200] = 10.0
    signal[1, 1000:1010] = np.nan
    signal[2] = np.nan
    out = preprocess(_record(signal))
    assert out.max() <= 3.0 * 1.1  # a square step rings (Gibbs) a little past the clip when resampled
    assert np.isfinite(out).all()
    assert np.all(out[2] == 0.0)


def test_missing_leads_are_named():
    with pytest.raises(MissingLeadsError, match="missing leads V5, V6"):
        preprocess(_record(np.zeros((10, 5000)), leads=MODEL_LEAD_ORDER[:10]))


def test_interpolate_nans_is_linear_between_neighbours():
    out = interpolate_nans(np.array([[0.0, np.nan, np.nan, 3.0]]))
    np.testing.assert_allclose(out, [[0.0, 1.0, 2.0, 3.0]])


def test_resample_is_identity_at_the_same_rate():
    x = np.random.default_rng(0).standard_normal((12, 100))
    assert resample(x, 100.0, 100.0) is x


def test_eval_windows_are_non_overlapping_and_cover_the_signal():
    signal = np.arange(12 * 1000, dtype=float).reshape(12, 1000)
    windows = eval_windows(signal, PreprocessConfig().window_samples)
    assert windows.shape == (4, 12, 250)
    np.testing.assert_array_equal(windows[1, 3], signal[3, 250:500])


def test_eval_windows_refuse_a_record_shorter_than_one_window():
    with pytest.raises(InvalidEcgError, match="shorter than one 250-sample window"):
        eval_windows(np.zeros((12, 100)), 250, record_id="short")


def test_random_crop_stays_inside_the_signal():
    signal = np.arange(1000, dtype=float)[None].repeat(12, 0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        crop = random_crop(signal, 250, rng)
        assert crop.shape == (12, 250)
        assert crop[0, -1] - crop[0, 0] == 249


def test_preprocess_config_round_trips_through_a_dict():
    config = PreprocessConfig(fs_hz=100.0, window_s=2.5)
    assert PreprocessConfig.from_dict(config.to_dict()) == config

"""The handcrafted features read back what the simulator put in, through the shared preprocessing."""

import numpy as np
import pytest

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord, preprocess
from model_training.data.ecg_features import FEATURE_NAMES, extract_features, extract_features_batch
from model_training.simulator.ecg_synth import EcgParams, NoiseParams, synthesize_ecg
from model_training.simulator.physiology import CONDITIONS_BY_KEY, EcgEffects, lab_driven_ecg_effects

NOISY = NoiseParams(baseline_mv=0.15, emg_mv=0.02, mains_mv=0.02)


def _features(effects: EcgEffects, *, noise: NoiseParams = NOISY, seed: int = 1):
    params = EcgParams.from_effects(effects)
    signal = synthesize_ecg(params, noise, np.random.default_rng(seed))
    return params, extract_features(preprocess(EcgRecord("r", signal, 500.0, MODEL_LEAD_ORDER)), 100.0)


@pytest.mark.parametrize("hr_shift", [-25.0, 0.0, 30.0, 60.0])
def test_heart_rate_within_3_bpm(hr_shift):
    params, features = _features(EcgEffects(hr_bpm=hr_shift))
    assert features.hr_bpm == pytest.approx(params.hr_bpm, abs=3.0)


def test_atrial_fibrillation_is_irregular_and_has_no_p_wave():
    _, sinus = _features(EcgEffects())
    _, af = _features(CONDITIONS_BY_KEY["atrial_fibrillation"].sign)
    assert sinus.rr_cv < 0.05 < 0.1 < af.rr_cv
    assert np.isnan(af.pr_ms) and not np.isnan(sinus.pr_ms)


def test_bundle_branch_block_measures_wider_than_normal_by_30_ms():
    _, normal = _features(EcgEffects())
    _, lbbb = _features(CONDITIONS_BY_KEY["lbbb"].sign)
    assert lbbb.qrs_ms > normal.qrs_ms + 30


def test_first_degree_av_block_lengthens_the_measured_pr():
    _, normal = _features(EcgEffects())
    _, block = _features(CONDITIONS_BY_KEY["av_block_1"].ecg)
    assert block.pr_ms > normal.pr_ms + 60


def test_hypocalcemia_measures_a_longer_qtc():
    _, normal = _features(lab_driven_ecg_effects({"calcium": 9.4}, 98.6))
    _, low = _features(lab_driven_ecg_effects({"calcium": 7.0}, 98.6))
    assert low.qtc_ms > normal.qtc_ms + 40


def test_hyperkalemia_measures_taller_t_waves_in_v2_to_v4():
    _, normal = _features(lab_driven_ecg_effects({"potassium": 4.2}, 98.6))
    _, high = _features(lab_driven_ecg_effects({"potassium": 7.0}, 98.6))
    assert high.t_amp_v2_v4_mv > 1.5 * normal.t_amp_v2_v4_mv


def test_anterior_stemi_measures_st_elevation_in_v1_to_v4():
    mi = CONDITIONS_BY_KEY["acute_mi"]
    _, normal = _features(EcgEffects())
    _, stemi = _features(mi.ecg + mi.variants[0].ecg)
    assert stemi.st_anterior_mv > 0.1 > normal.st_anterior_mv


def test_a_flat_lead_does_not_break_extraction():
    _, features = _features(EcgEffects(), noise=NoiseParams(flat_lead=7, emg_mv=0.01))
    assert np.isfinite(features.hr_bpm)


def test_noise_without_beats_gives_nans_not_errors():
    noise = np.random.default_rng(0).normal(0.0, 0.01, size=(2, 12, 1000))
    out = extract_features_batch(noise, 100.0)
    assert out.shape == (2, len(FEATURE_NAMES))
    assert np.isnan(out[:, FEATURE_NAMES.index("qrs_ms")]).all()


def test_also_works_at_500_hz():
    params = EcgParams.from_effects(EcgEffects())
    signal = synthesize_ecg(params, NOISY, np.random.default_rng(2))
    assert extract_features(signal, 500.0).hr_bpm == pytest.approx(params.hr_bpm, abs=3.0)

"""The coupling table is consistent, and each coupling pushes the ECG the textbook way."""

import numpy as np

from integrations.ecg import MODEL_LEAD_ORDER
from model_training.data.catalogue import ICD10_TITLES, LABS_BY_KEY
from model_training.simulator.ecg_synth import PROJECTION, EcgParams, beat_template, rr_intervals_s
from model_training.simulator.hospital import ConditionInstance, condition_ecg_effects
from model_training.simulator.physiology import (
    CONDITIONS,
    CONDITIONS_BY_KEY,
    LAB_PHYSIOLOGY,
    VITAL_PHYSIOLOGY,
    EcgEffects,
    Visibility,
    demographic_ecg_effects,
    documented_visibility,
    lab_driven_ecg_effects,
)

FS_HZ = 500.0
LEAD = {name: i for i, name in enumerate(MODEL_LEAD_ORDER)}


def test_the_table_names_only_known_labs_vitals_and_earlier_conditions():
    seen = set()
    for condition in CONDITIONS:
        assert set(condition.comorbid_log_or) <= seen, condition.key
        assert set(condition.lab_shifts_sd) <= set(LAB_PHYSIOLOGY), condition.key
        assert set(condition.vital_shifts) <= set(VITAL_PHYSIOLOGY), condition.key
        assert all(v.icd10 and v.display for v in condition.variants)
        seen.add(condition.key)
    assert set(LAB_PHYSIOLOGY) == set(LABS_BY_KEY)


def test_non_cardiac_conditions_leave_weak_ecg_traces_as_real_ecgs_do():
    assert len(CONDITIONS) >= 15
    for key in ("diabetes", "liver_disease", "sepsis", "obesity", "depression", "uti"):
        assert CONDITIONS_BY_KEY[key].visibility is Visibility.PARTIAL, key
        assert CONDITIONS_BY_KEY[key].ecg != EcgEffects(), key
    assert any(c.visibility is Visibility.INVISIBLE for c in CONDITIONS)


def test_invisible_conditions_have_no_direct_ecg_effect():
    for condition in CONDITIONS:
        if condition.visibility is Visibility.INVISIBLE:
            assert condition.ecg == EcgEffects() and condition.sign == EcgEffects(), condition.key
            assert all(v.ecg == EcgEffects() for v in condition.variants), condition.key


def test_a_patient_without_the_textbook_sign_still_carries_the_conditions_traces():
    af = CONDITIONS_BY_KEY["atrial_fibrillation"]
    assert 0.0 < af.sign_penetrance < 1.0
    shown = condition_ecg_effects(af, ConditionInstance("atrial_fibrillation", 0, 1.0, True, sign_shown=True))
    hidden = condition_ecg_effects(af, ConditionInstance("atrial_fibrillation", 0, 1.0, True, sign_shown=False))
    assert shown.has("af") and not hidden.has("af")
    assert hidden.p_amp_log > 0 and hidden.pr_ms > 0, "paroxysmal AF in sinus rhythm: atrial enlargement"


def test_the_ecg_encodes_sex_and_age():
    z = np.zeros(7)
    man, woman = demographic_ecg_effects(50, False, z), demographic_ecg_effects(50, True, z)
    assert woman.qrs_amp_log < man.qrs_amp_log and woman.t_amp_log < man.t_amp_log
    assert woman.qtc_ms > man.qtc_ms and woman.qrs_ms < man.qrs_ms
    young, old = demographic_ecg_effects(25, False, z), demographic_ecg_effects(85, False, z)
    assert old.axis_deg < young.axis_deg and old.qrs_amp_log < young.qrs_amp_log


def _leads_of_one_beat(effects: EcgEffects) -> tuple[np.ndarray, int, EcgParams]:
    params = EcgParams.from_effects(effects)
    dipole, onset = beat_template(params, FS_HZ)
    return PROJECTION @ dipole, onset, params


def _t_peak(effects: EcgEffects, leads: tuple[str, ...]) -> float:
    beat, onset, params = _leads_of_one_beat(effects)
    after_qrs = onset + int((params.qrs_ms + 60) * FS_HZ / 1000)
    return float(np.mean([beat[LEAD[name], after_qrs:].max() for name in leads]))


def test_hyperkalemia_makes_t_waves_taller_in_v2_to_v4():
    normal = _t_peak(lab_driven_ecg_effects({"potassium": 4.2}, 98.6), ("V2", "V3", "V4"))
    high = _t_peak(lab_driven_ecg_effects({"potassium": 7.0}, 98.6), ("V2", "V3", "V4"))
    assert high > 1.5 * normal


def test_hyperkalemia_lengthens_pr_and_widens_qrs_and_hypokalemia_adds_u_waves():
    normal = EcgParams.from_effects(lab_driven_ecg_effects({"potassium": 4.2}, 98.6))
    high = EcgParams.from_effects(lab_driven_ecg_effects({"potassium": 7.5}, 98.6))
    low = EcgParams.from_effects(lab_driven_ecg_effects({"potassium": 2.6}, 98.6))
    assert high.pr_ms > normal.pr_ms + 20 and high.qrs_ms > normal.qrs_ms + 25
    assert high.p_amp_mv < normal.p_amp_mv
    assert low.u_amp_mv > normal.u_amp_mv + 0.08 and low.t_amp_mv < normal.t_amp_mv


def test_atrial_fibrillation_makes_rr_irregular():
    rng = np.random.default_rng(0)
    sinus = rr_intervals_s(EcgParams.from_effects(EcgEffects()), 60.0, rng)
    af = rr_intervals_s(EcgParams.from_effects(CONDITIONS_BY_KEY["atrial_fibrillation"].sign), 60.0, rng)
    assert np.std(af) / np.mean(af) > 3 * np.std(sinus) / np.mean(sinus)
    assert np.std(af) / np.mean(af) > 0.12


def test_calcium_moves_qtc_the_right_way_and_women_have_longer_qtc():
    low = EcgParams.from_effects(lab_driven_ecg_effects({"calcium": 7.0}, 98.6))
    normal = EcgParams.from_effects(lab_driven_ecg_effects({"calcium": 9.4}, 98.6))
    high = EcgParams.from_effects(lab_driven_ecg_effects({"calcium": 12.0}, 98.6))
    assert low.qtc_ms > normal.qtc_ms + 50 > high.qtc_ms + 100
    z = np.zeros(7)
    assert demographic_ecg_effects(50, True, z).qtc_ms > demographic_ecg_effects(50, False, z).qtc_ms


def test_age_lengthens_pr_and_qrs():
    z = np.zeros(7)
    young, old = demographic_ecg_effects(25, False, z), demographic_ecg_effects(85, False, z)
    assert old.pr_ms > young.pr_ms and old.qrs_ms > young.qrs_ms


def _st_level(effects: EcgEffects, lead: str) -> float:
    beat, onset, params = _leads_of_one_beat(effects)
    j_plus_60 = onset + int((params.qrs_ms + 60) * FS_HZ / 1000)
    return float(beat[LEAD[lead], j_plus_60] - beat[LEAD[lead], onset - int(0.02 * FS_HZ)])


def test_anterior_stemi_elevates_st_in_v2_with_reciprocal_inferior_depression():
    mi = CONDITIONS_BY_KEY["acute_mi"]
    anterior = mi.ecg + mi.variants[0].ecg
    assert _st_level(anterior, "V2") > _st_level(EcgEffects(), "V2") + 0.15
    assert _st_level(anterior, "III") < _st_level(EcgEffects(), "III")


def test_inferior_stemi_elevates_st_in_ii_iii_avf():
    mi = CONDITIONS_BY_KEY["acute_mi"]
    inferior = mi.ecg + mi.variants[1].ecg
    for lead in ("II", "III", "aVF"):
        assert _st_level(inferior, lead) > _st_level(EcgEffects(), lead) + 0.1, lead
    assert _st_level(inferior, "aVL") < _st_level(EcgEffects(), "aVL")


def test_bundle_branch_blocks_widen_the_qrs_beyond_120_ms():
    assert EcgParams.from_effects(CONDITIONS_BY_KEY["lbbb"].sign).qrs_ms >= 120
    assert EcgParams.from_effects(CONDITIONS_BY_KEY["rbbb"].sign).qrs_ms >= 120


def test_fever_and_sepsis_raise_the_heart_rate():
    assert lab_driven_ecg_effects({}, 102.2).hr_bpm > 15
    assert CONDITIONS_BY_KEY["sepsis"].ecg.hr_bpm > 10


def test_copd_and_obesity_lower_voltage_and_shift_the_axis_opposite_ways():
    copd, obesity = CONDITIONS_BY_KEY["copd"].sign, CONDITIONS_BY_KEY["obesity"].ecg
    assert copd.qrs_amp_log < 0 and obesity.qrs_amp_log < 0
    assert copd.axis_deg > 0 > obesity.axis_deg


def test_every_simulated_code_has_its_icd10_title_in_the_shared_catalogue():
    assert documented_visibility(), "the simulator writes no codes"
    for code in documented_visibility():
        assert ICD10_TITLES[code], code

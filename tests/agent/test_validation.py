"""An ECG is scored only when its signal is plausible; what is repaired is said, what is refused names the reason.

Most cases start from a real 12-lead recording (pydicom's ``waveform_ecg.dcm``, 1000 Hz,
stored in µV) and corrupt it the way decoders, units and amplifiers do.
"""

import dataclasses
import re

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file

from agent.validation import RefusalReason, ValidationRules, validate_record
from integrations.ecg import MIMIC_FILE_LEAD_ORDER, MODEL_LEAD_ORDER, EcgRecord, resample
from integrations.errors import InvalidEcgError, MissingLeadsError
from integrations.fhir import ecg_to_observation, observation_to_ecg
from integrations.fhir.ecg_mapping import LEAD_BY_MDC_CODE
from integrations.wfdb_files import read_wfdb
from model_training.data.layout import DataLayout
from model_training.simulator.ecg_synth import NoiseParams, synthesize_ecg
from model_training.simulator.hospital import sample_patient
from model_training.simulator.simulate import simulate_hospital

RULES = ValidationRules(required_leads=MODEL_LEAD_ORDER, min_duration_s=2.5, min_fs_hz=100.0)


@pytest.fixture(scope="module")
def real_ecg() -> EcgRecord:
    """The 10 s, 1000 Hz 12-lead ECG that ships with pydicom, in mV, leads named as the file names them."""
    dataset = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    group = dataset.WaveformSequence[0]
    channels = group.ChannelDefinitionSequence
    assert {channel.ChannelSensitivityUnitsSequence[0].CodeValue for channel in channels} == {"uV"}
    names = tuple(  # "Lead I (Einthoven)" → "I", "Lead aVR" → "aVR"
        channel.ChannelSourceSequence[0].CodeMeaning.removeprefix("Lead ").split(" (")[0] for channel in channels
    )
    signal_mv = np.ascontiguousarray(dataset.waveform_array(0).T) / 1000.0
    return EcgRecord("dicom-ecg", signal_mv, float(group.SamplingFrequency), names, source="dicom")


def _at(fs_hz: float, record: EcgRecord) -> EcgRecord:
    return dataclasses.replace(record, signal_mv=resample(record.signal_mv, record.fs_hz, fs_hz), fs_hz=fs_hz)


def _scaled(record: EcgRecord, factor: float) -> EcgRecord:
    return dataclasses.replace(record, signal_mv=record.signal_mv * factor)


def _with_lead(record: EcgRecord, lead: str, samples: np.ndarray) -> EcgRecord:
    signal = record.signal_mv.copy()
    signal[record.lead_names.index(lead)] = samples
    return dataclasses.replace(record, signal_mv=signal)


def _lead(record: EcgRecord, lead: str) -> np.ndarray:
    return record.signal_mv[record.lead_names.index(lead)]


def _refusal(record: EcgRecord, rules: ValidationRules = RULES) -> str:
    with pytest.raises(InvalidEcgError) as refused:
        validate_record(record, rules)
    assert refused.value.record_id == record.record_id
    assert refused.value.reason.split(": ", 1)[0] in set(RefusalReason)  # the prefix quarantine tables key on
    return refused.value.reason


# ------------------------------------------------------------------ clean ECGs pass untouched


@pytest.mark.parametrize("fs_hz", [1000.0, 500.0, 360.0, 250.0])
def test_a_real_clean_ecg_passes_with_no_notes_and_is_scored_as_received(real_ecg, fs_hz):
    record = _at(fs_hz, real_ecg) if fs_hz != real_ecg.fs_hz else real_ecg
    assessment = validate_record(record, RULES)
    assert assessment.record is record
    assert (assessment.imputed_leads, assessment.dropped_leads, assessment.interpolated_leads) == ((), (), ())
    assert assessment.notes == () and not assessment.altered
    assert assessment.summary() == "signal plausible, scored as received"


@pytest.fixture(scope="module")
def simulated_hospital(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    # Seed 12: about 50 ECGs, among them a few with a flat or a missing lead (simulation_truth.csv names them).
    simulate_hospital(root, n_patients=40, seed=12, workers=1, progress=False)
    return root


def test_no_ecg_of_the_simulated_hospital_is_refused_and_only_its_broken_leads_are_noted(simulated_hospital):
    layout = DataLayout()
    studies = pd.read_csv(simulated_hospital / layout.record_list)
    noise = pd.read_csv(simulated_hospital / "simulation_truth.csv").set_index("study_id")["noise"].fillna("")
    with_broken_lead = {study for study, flags in noise.items() if "flat_lead" in flags or "missing_lead" in flags}
    altered = set()
    for study in studies.itertuples():
        record = read_wfdb(simulated_hospital / layout.ecg_root / study.path)  # MIMIC lead order, 5 µV steps
        assessment = validate_record(record, RULES)
        if assessment.altered:
            altered.add(study.study_id)
            assert len(assessment.imputed_leads + assessment.dropped_leads) == 1, assessment.summary()
    assert len(studies) > 40 and with_broken_lead, "seed 12 draws at least one ECG with a broken lead"
    assert altered == with_broken_lead


def test_the_simulators_odd_flat_and_missing_leads_are_repaired_not_refused():
    patient = sample_patient(seed=3, patient_index=0)
    noise = dataclasses.replace(
        NoiseParams.sample(np.random.default_rng(1)),
        flat_lead=MODEL_LEAD_ORDER.index("V2"),
        missing_lead=MODEL_LEAD_ORDER.index("aVL"),
    )
    signal_mv = synthesize_ecg(patient.visits[0].ecg, noise, np.random.default_rng(2))
    assessment = validate_record(EcgRecord("sim", signal_mv, 500.0, MODEL_LEAD_ORDER), RULES)
    assert assessment.imputed_leads == ("aVL",) and assessment.dropped_leads == ("V2",)
    assert assessment.summary() == (
        "lead aVL imputed from I and II (absent-lead: all samples missing); "
        "lead V2 zero-filled (flat-lead: held at 0.000 mV for the whole record)"
    )


def test_a_pacing_spike_or_an_electrode_pop_beyond_the_amplitude_limit_is_not_a_unit_error(real_ecg):
    spiked = _lead(real_ecg, "V3").copy()
    spiked[1000:1010] = 15.0  # 10 ms at 15 mV: 0.1 % of the lead
    assert not validate_record(_with_lead(real_ecg, "V3", spiked), RULES).altered


# ------------------------------------------------------------------ refused: never scored


def test_values_of_1e5_mv_are_refused_naming_the_lead_and_its_share_beyond_the_limit(real_ecg):
    """±200 V in an Observation: preprocessing would clip it to a ±3 mV square wave and the model would answer."""
    volts = _scaled(real_ecg, 1e5)
    reason = _refusal(volts)
    found = re.fullmatch(
        r"implausible-amplitude: lead (\w+) exceeds ±10 mV for (\d+) % of samples \(so do (.+)\)", reason
    )
    assert found, reason
    lead, percent, others = found.group(1), int(found.group(2)), found.group(3).split(", ")
    assert sorted([lead, *others]) == sorted(MODEL_LEAD_ORDER)
    worst_share = max(np.mean(np.abs(_lead(volts, name)) > 10.0) for name in MODEL_LEAD_ORDER)
    assert np.mean(np.abs(_lead(volts, lead)) > 10.0) == worst_share
    assert percent == round(100 * worst_share) and percent >= 90


def test_microvolts_read_as_millivolts_are_refused(real_ecg):
    reason = _refusal(_scaled(real_ecg, 1000.0))
    assert reason.startswith("implausible-amplitude: lead ")


def test_infinite_samples_are_a_decoder_bug_not_missing_samples(real_ecg):
    broken = _lead(real_ecg, "V4").copy()
    broken[[10, 20]] = [np.inf, -np.inf]
    assert _refusal(_with_lead(real_ecg, "V4", broken)) == "non-finite: infinite samples in lead(s) V4"


@pytest.mark.parametrize(("fs_hz", "shown"), [(5.0, "5 Hz"), (100_000.0, "100000 Hz")])
def test_a_sampling_rate_no_ecg_cart_uses_is_refused(real_ecg, fs_hz, shown):
    reason = _refusal(dataclasses.replace(real_ecg, fs_hz=fs_hz))
    assert reason == f"implausible-rate: {shown} is outside the plausible 100–20000 Hz"


def test_a_record_shorter_than_the_models_window_is_refused(real_ecg):
    short = dataclasses.replace(real_ecg, signal_mv=real_ecg.signal_mv[:, :2000])
    assert _refusal(short) == "too-short: 2.00 s is shorter than the model's 2.5 s"


def test_a_required_lead_absent_from_the_record_raises_missing_leads_naming_them(real_ecg):
    eleven = dataclasses.replace(real_ecg, signal_mv=real_ecg.signal_mv[:10], lead_names=real_ecg.lead_names[:10])
    with pytest.raises(MissingLeadsError) as refused:
        validate_record(eleven, RULES)
    assert refused.value.missing == ("V5", "V6")
    assert refused.value.reason == "missing-leads: missing leads V5, V6"


def test_three_unusable_leads_with_a_limit_of_two_are_refused_listing_each(real_ecg):
    n = real_ecg.n_samples
    railed = np.clip(_lead(real_ecg, "I") + np.where(np.arange(n) < n // 10, 5.0, 0.0), -2.0, 2.0)
    record = _with_lead(real_ecg, "I", railed)  # a baseline jump drives the amplifier to its +2 mV rail for 1 s
    record = _with_lead(record, "V1", np.full(n, np.nan))
    record = _with_lead(record, "V2", np.zeros(n))
    assert _refusal(record) == (
        "too-many-unusable-leads: 3 unusable leads (at most 2): "
        "I (saturated: pinned at +2.000 mV for 10% of samples), "
        "V1 (absent-lead: all samples missing), "
        "V2 (flat-lead: held at 0.000 mV for the whole record)"
    )


def test_the_limit_on_unusable_leads_is_a_rule(real_ecg):
    record = _with_lead(real_ecg, "V6", np.full(real_ecg.n_samples, np.nan))
    strict = dataclasses.replace(RULES, max_bad_leads=0)
    assert _refusal(record, strict).startswith("too-many-unusable-leads: 1 unusable leads (at most 0): V6 (")


# ------------------------------------------------------------------ repaired within the limit, and said so


def test_lead_ii_all_missing_with_i_and_iii_good_is_imputed_exactly_as_i_plus_iii(real_ecg):
    """The FHIR Observation whose lead II was all error tokens ("E" → NaN)."""
    record = _with_lead(real_ecg, "II", np.full(real_ecg.n_samples, np.nan))
    assessment = validate_record(record, RULES)
    assert np.array_equal(_lead(assessment.record, "II"), _lead(record, "I") + _lead(record, "III"))
    assert assessment.imputed_leads == ("II",) and assessment.dropped_leads == ()
    assert assessment.summary() == "lead II imputed from I and III (absent-lead: all samples missing)"
    assert np.isnan(_lead(record, "II")).all()  # the input record is left as it came


def test_an_imputed_augmented_lead_matches_the_one_the_cart_computed(real_ecg):
    record = _with_lead(real_ecg, "aVR", np.full(real_ecg.n_samples, np.nan))
    assessment = validate_record(record, RULES)
    assert assessment.imputed_leads == ("aVR",)
    # The cart stored aVR rounded to its 1.25 µV step; the exact −(I + II)/2 is within one step of it.
    assert np.abs(_lead(assessment.record, "aVR") - _lead(real_ecg, "aVR")).max() <= 0.00125


def test_a_precordial_lead_all_missing_is_zero_filled_and_reported(real_ecg):
    record = _with_lead(real_ecg, "V3", np.full(real_ecg.n_samples, np.nan))
    assessment = validate_record(record, RULES)
    assert assessment.dropped_leads == ("V3",) and assessment.imputed_leads == ()
    assert not _lead(assessment.record, "V3").any()
    assert assessment.notes == ("lead V3 zero-filled (absent-lead: all samples missing)",)
    others = [name for name in MODEL_LEAD_ORDER if name != "V3"]
    assert all(np.array_equal(_lead(assessment.record, name), _lead(real_ecg, name)) for name in others)


def test_short_gaps_are_interpolated_and_counted(real_ecg):
    gappy = _lead(real_ecg, "V5").copy()
    gappy[2000:2040] = np.nan
    gappy[7000:7005] = np.nan
    assessment = validate_record(_with_lead(real_ecg, "V5", gappy), RULES)
    assert assessment.interpolated_leads == ("V5",)
    assert assessment.notes == ("lead V5: 45 missing samples in 2 gap(s), longest 0.040 s, interpolated linearly",)
    repaired = _lead(assessment.record, "V5")
    assert np.isfinite(repaired).all()
    assert repaired[2020] == pytest.approx((gappy[1999] + gappy[2040]) / 2, abs=1e-3)


def test_a_lead_missing_for_most_of_the_record_is_absent(real_ecg):
    mostly_gone = _lead(real_ecg, "V1").copy()
    mostly_gone[: 6 * real_ecg.n_samples // 10] = np.nan
    assessment = validate_record(_with_lead(real_ecg, "V1", mostly_gone), RULES)
    assert assessment.notes == ("lead V1 zero-filled (absent-lead: 60% of samples missing)",)


def test_a_gap_longer_than_a_beat_is_not_interpolated_the_lead_counts_as_absent(real_ecg):
    gappy = _lead(real_ecg, "V2").copy()
    gappy[4000:6000] = np.nan  # 2 s: 20 % of the lead, but whole beats
    assessment = validate_record(_with_lead(real_ecg, "V2", gappy), RULES)
    assert assessment.notes == ("lead V2 zero-filled (absent-lead: a 2.00 s gap, longer than 1 s)",)


def test_a_transmission_dropout_in_every_lead_is_refused(real_ecg):
    dropout = real_ecg.signal_mv.copy()
    dropout[:, 4000:6000] = np.nan
    reason = _refusal(dataclasses.replace(real_ecg, signal_mv=dropout))
    assert reason.startswith("too-many-unusable-leads: 12 unusable leads (at most 2): I (absent-lead: a 2.00 s gap")


def test_an_electrode_off_for_most_of_the_record_makes_a_flat_lead(real_ecg):
    off = _lead(real_ecg, "V4").copy()
    off[3000:] = 0.0  # lead-off after 3 s: the cart holds 0 mV
    assessment = validate_record(_with_lead(real_ecg, "V4", off), RULES)
    assert assessment.notes == ("lead V4 zero-filled (flat-lead: held at one value for 7.0 s of 10.0 s)",)


@pytest.mark.parametrize("at_500_hz", [False, True], ids=["1000-hz", "500-hz"])
def test_flat_topped_waves_at_a_leads_extreme_are_clipping(real_ecg, at_500_hz):
    record = _at(500.0, real_ecg) if at_500_hz else real_ecg
    v5 = _lead(record, "V5")
    clipped = np.clip(v5, None, 0.7 * v5.max())  # every R wave of V5 cut at 70 % of its height
    assessment = validate_record(_with_lead(record, "V5", clipped), RULES)
    assert assessment.dropped_leads == ("V5",)
    assert re.fullmatch(r"lead V5 zero-filled \(clipped: \d+ flat-topped waves at its extremes\)", assessment.summary())


def test_a_whole_record_clipped_by_its_converter_is_refused(real_ecg):
    clipped = dataclasses.replace(real_ecg, signal_mv=np.clip(real_ecg.signal_mv, -0.3, 0.3))
    assert _refusal(clipped).startswith("too-many-unusable-leads: ")


def test_a_record_in_another_lead_order_with_extra_leads_keeps_them_as_they_came(real_ecg):
    """A 15-lead record (12 + Frank X, Y, Z) in the MIMIC file order: only the required leads are judged."""
    order = [real_ecg.lead_names.index(lead) for lead in MIMIC_FILE_LEAD_ORDER]
    frank = np.full((3, real_ecg.n_samples), np.inf)  # not required, so never judged
    signal_mv = np.vstack([real_ecg.signal_mv[order], frank])
    names = (*MIMIC_FILE_LEAD_ORDER, "X", "Y", "Z")
    record = EcgRecord("fifteen", signal_mv, real_ecg.fs_hz, names)
    record = _with_lead(record, "III", np.full(record.n_samples, np.nan))
    assessment = validate_record(record, RULES)
    assert assessment.record.lead_names == names
    assert assessment.summary() == "lead III imputed from I and II (absent-lead: all samples missing)"
    assert np.array_equal(_lead(assessment.record, "III"), _lead(record, "II") - _lead(record, "I"))
    assert np.array_equal(assessment.record.signal_mv[12:], frank)
    for lead in MIMIC_FILE_LEAD_ORDER:
        if lead != "III":
            assert np.array_equal(_lead(assessment.record, lead), _lead(record, lead)), lead


# ------------------------------------------------------------------ the two incidents, through the FHIR decoder


def _as_decoded_observation(record: EcgRecord, edit_component) -> EcgRecord:
    """``record`` sent as a FHIR ECG Observation, one thing changed by ``edit_component(lead, sampled_data)``."""
    observation = ecg_to_observation(record) | {"id": "obs-1"}
    for component in observation["component"]:
        edit_component(LEAD_BY_MDC_CODE[component["code"]["coding"][0]["code"]], component["valueSampledData"])
    return observation_to_ecg(observation)


def test_an_observation_whose_lead_ii_is_all_error_tokens_is_scored_with_ii_imputed_and_says_so(real_ecg):
    def lead_ii_all_errors(lead: str, sampled: dict) -> None:
        if lead == "II":
            sampled["data"] = " ".join(["E"] * real_ecg.n_samples)

    decoded = _as_decoded_observation(real_ecg, lead_ii_all_errors)
    assessment = validate_record(decoded, RULES)
    assert assessment.summary() == "lead II imputed from I and III (absent-lead: all samples missing)"
    assert np.array_equal(_lead(assessment.record, "II"), _lead(decoded, "I") + _lead(decoded, "III"))


def test_an_observation_whose_factor_makes_volts_of_millivolts_is_refused(real_ecg):
    def factor_1e5_too_large(lead: str, sampled: dict) -> None:
        sampled["factor"] *= 1e5

    reason = _refusal(_as_decoded_observation(real_ecg, factor_1e5_too_large))
    assert reason.startswith("implausible-amplitude: lead ")


def test_an_observation_whose_converter_reports_over_range_for_every_r_wave_is_clipped(real_ecg):
    """SampledData ``U`` (above the upper limit of detection) decodes to the limit: flat tops at +1 mV."""

    def v5_over_range_above_1_mv(lead: str, sampled: dict) -> None:
        if lead == "V5":
            codes = np.round(_lead(real_ecg, "V5") / sampled["factor"])
            sampled["upperLimit"] = 1.0
            sampled["data"] = " ".join("U" if code * sampled["factor"] > 1.0 else f"{code:.0f}" for code in codes)

    assessment = validate_record(_as_decoded_observation(real_ecg, v5_over_range_above_1_mv), RULES)
    assert assessment.dropped_leads == ("V5",)
    assert re.fullmatch(r"lead V5 zero-filled \(clipped: \d+ flat-topped waves at its extremes\)", assessment.summary())

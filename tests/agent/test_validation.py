"""An ECG is scored only when it can be: every refusal names the record and the reason."""

import numpy as np
import pytest

from agent.validation import ValidationRules, lead_problem, validate_record
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.errors import InvalidEcgError, MissingLeadsError

RULES = ValidationRules(required_leads=MODEL_LEAD_ORDER, min_duration_s=2.5, min_fs_hz=100.0)


def _ecg(fs_hz: float = 500.0, duration_s: float = 10.0, leads: tuple[str, ...] = MODEL_LEAD_ORDER) -> EcgRecord:
    t = np.arange(round(fs_hz * duration_s)) / fs_hz
    rng = np.random.default_rng(0)
    beats = np.exp(-(((t % 0.8) - 0.4) ** 2) / 2e-4)  # an R wave every 0.8 s
    signal = np.stack([(0.5 + 0.1 * i) * beats + 0.02 * rng.standard_normal(t.size) for i in range(len(leads))])
    return EcgRecord(record_id="ecg-1", signal_mv=signal, fs_hz=fs_hz, lead_names=leads)


def _railed(samples_mv: np.ndarray) -> np.ndarray:
    """A baseline jump that drives the amplifier to its ±2 mV rail for a second of the record."""
    jumped = samples_mv.copy()
    jumped[: jumped.size // 10] += 5.0
    return np.clip(jumped, -2.0, 2.0)


def _with_lead(record: EcgRecord, lead: str, samples: np.ndarray) -> EcgRecord:
    signal = record.signal_mv.copy()
    signal[record.lead_names.index(lead)] = samples
    return EcgRecord(record_id=record.record_id, signal_mv=signal, fs_hz=record.fs_hz, lead_names=record.lead_names)


def test_a_clean_12_lead_ecg_at_any_cart_rate_passes():
    for fs_hz in (250.0, 360.0, 500.0, 1000.0):
        validate_record(_ecg(fs_hz=fs_hz), RULES)


def test_one_flat_lead_is_tolerated_as_carts_lose_an_electrode_now_and_then():
    record = _ecg()
    validate_record(_with_lead(record, "V3", np.zeros(record.n_samples)), RULES)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: _ecg(fs_hz=50.0), "sampling rate 50 Hz outside"),
        (lambda: _ecg(duration_s=2.0), "2.00 s is shorter than the model's 2.5 s"),
        (lambda: _ecg(leads=MODEL_LEAD_ORDER[:11]), "missing leads V6"),
    ],
    ids=["rate-below-model", "too-short", "11-leads"],
)
def test_records_the_model_cannot_read_are_refused_with_the_reason(make, reason):
    with pytest.raises(InvalidEcgError, match=reason) as refused:
        validate_record(make(), RULES)
    assert refused.value.record_id == "ecg-1"


def test_missing_leads_raise_the_specific_error_naming_them():
    with pytest.raises(MissingLeadsError) as refused:
        validate_record(_ecg(leads=MODEL_LEAD_ORDER[:10]), RULES)
    assert refused.value.missing == ("V5", "V6")


def test_an_all_flat_record_is_refused():
    record = _ecg()
    flat = EcgRecord("ecg-1", np.zeros_like(record.signal_mv), 500.0, MODEL_LEAD_ORDER)
    with pytest.raises(InvalidEcgError, match="no usable lead"):
        validate_record(flat, RULES)


def test_three_bad_leads_are_too_many_and_each_is_named():
    record = _ecg()
    record = _with_lead(record, "I", _railed(record.signal_mv[0]))
    record = _with_lead(record, "V1", np.full(record.n_samples, np.nan))
    record = _with_lead(record, "V2", np.zeros(record.n_samples))
    with pytest.raises(InvalidEcgError, match=r"3 unusable leads .*I saturated, V1 missing, V2 flat"):
        validate_record(record, RULES)


def test_lead_problem_tells_missing_flat_and_saturated_apart():
    record = _ecg()
    assert lead_problem(record.signal_mv[0]) is None
    assert lead_problem(np.full(100, np.nan)) == "missing"
    assert lead_problem(np.full(100, 0.3)) == "flat"
    assert lead_problem(_railed(record.signal_mv[0])) == "saturated"

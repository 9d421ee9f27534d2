"""Is this ECG fit to be scored? Checked before the shared preprocessing, per record.

A record that fails is quarantined with the reason; it is never scored and never
silently dropped. The rules come from the model's input contract (leads, window) plus
signal-quality limits that no model should be asked to read through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from integrations.ecg import EcgRecord, canonical_lead_name
from integrations.errors import InvalidEcgError, MissingLeadsError

#: Peak-to-peak below this over the whole record: an electrode that is off or a dead channel.
FLAT_PEAK_TO_PEAK_MV = 0.02
#: A lead pinned at its own extreme for this share of samples: the amplifier is at its rail.
SATURATED_FRACTION = 0.05
#: A lead missing more than this share of samples counts as missing.
MISSING_FRACTION = 0.5


@dataclass(frozen=True, slots=True)
class SignalAssessment:
    """A record fit to be scored: ``record`` is what to score; the notes say what was done to it, in words."""

    record: EcgRecord
    imputed_leads: tuple[str, ...] = ()
    dropped_leads: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ValidationRules:
    """Limits a record must meet; built from the model manifest's input contract."""

    required_leads: tuple[str, ...]
    min_duration_s: float
    #: Below the model's own rate, resampling would invent signal; above this, the source is not an ECG cart.
    min_fs_hz: float
    max_fs_hz: float = 20_000.0
    #: Flat, saturated or missing leads tolerated before the record is refused (carts do lose one now and then).
    max_bad_leads: int = 2


def validate_record(record: EcgRecord, rules: ValidationRules) -> SignalAssessment:
    """Raise :class:`InvalidEcgError` naming the record and the first reason it cannot be scored."""
    _check_rate(record, rules)
    _check_duration(record, rules)
    _check_leads_present(record, rules)
    _check_signal_quality(record, rules)
    return SignalAssessment(record)


def _check_rate(record: EcgRecord, rules: ValidationRules) -> None:
    if not rules.min_fs_hz <= record.fs_hz <= rules.max_fs_hz:
        raise InvalidEcgError(
            record.record_id,
            f"sampling rate {record.fs_hz:g} Hz outside the plausible {rules.min_fs_hz:g}–{rules.max_fs_hz:g} Hz",
        )


def _check_duration(record: EcgRecord, rules: ValidationRules) -> None:
    if record.duration_s < rules.min_duration_s:
        raise InvalidEcgError(
            record.record_id, f"{record.duration_s:.2f} s is shorter than the model's {rules.min_duration_s:g} s"
        )


def _check_leads_present(record: EcgRecord, rules: ValidationRules) -> None:
    present = {canonical_lead_name(name) for name in record.lead_names}
    missing = tuple(lead for lead in rules.required_leads if lead not in present)
    if missing:
        raise MissingLeadsError(record.record_id, missing)


def _check_signal_quality(record: EcgRecord, rules: ValidationRules) -> None:
    rows = {canonical_lead_name(name): row for row, name in enumerate(record.lead_names)}
    problems = [
        f"{lead} {problem}"
        for lead in rules.required_leads
        if (problem := lead_problem(record.signal_mv[rows[lead]])) is not None
    ]
    if len(problems) == len(rules.required_leads):
        raise InvalidEcgError(record.record_id, f"no usable lead: {', '.join(problems)}")
    if len(problems) > rules.max_bad_leads:
        raise InvalidEcgError(
            record.record_id, f"{len(problems)} unusable leads (at most {rules.max_bad_leads}): {', '.join(problems)}"
        )


def lead_problem(samples_mv: np.ndarray) -> str | None:
    """Why one lead cannot be read (``missing``, ``flat``, ``saturated``), or None when it is fine."""
    finite = samples_mv[np.isfinite(samples_mv)]
    if finite.size <= MISSING_FRACTION * samples_mv.size:
        return "missing"
    low, high = float(finite.min()), float(finite.max())
    if high - low < FLAT_PEAK_TO_PEAK_MV:
        return "flat"
    at_rail = max(np.count_nonzero(finite == low), np.count_nonzero(finite == high))
    if at_rail >= SATURATED_FRACTION * finite.size:
        return "saturated"
    return None

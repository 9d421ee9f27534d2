"""Is this ECG fit to be scored? Checked before the shared preprocessing, per record.

:func:`validate_record` either refuses a record — :class:`InvalidEcgError` whose reason
starts with a fixed prefix (:class:`RefusalReason`), quarantined and never scored — or
returns a :class:`SignalAssessment`: the record to score and what was done to it.
Refusals, in the order they are checked::

    implausible-rate          sampling rate outside ValidationRules.min_fs_hz..max_fs_hz
    too-short                 shorter than the model's window
    missing-leads             a required lead is not in the record at all (MissingLeadsError)
    non-finite                ±inf samples: a decoder or unit bug (NaN is a missing sample, not this)
    implausible-amplitude     a lead beyond ±max_amplitude_mv for more than max_implausible_fraction of it
    too-many-unusable-leads   more than max_bad_leads leads absent, flat, saturated or clipped

Up to ``max_bad_leads`` unusable leads (see :mod:`agent.lead_quality`) are repaired, never
silently: a limb lead is **imputed** — derived exactly from the first two usable limb leads
(I, II, III, aVR, aVL, aVF in that order) through Einthoven's and Goldberger's relations, which
hold sample by sample because a cart records two limb leads and computes the other four:
III = II − I, aVR = −(I + II)/2, aVL = I − II/2, aVF = II − I/2 — and a precordial lead, which
no relation gives, is **dropped**: zero-filled, as the shared preprocessing does for an
all-missing lead. Gaps of missing samples (up to ``max_gap_s`` each) in a usable lead are
interpolated linearly, as the shared preprocessing would. Each action is a note in the assessment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from agent.lead_quality import LeadMeasures, LeadProblem, gaps, lead_problems, measure_leads
from integrations.ecg import EcgRecord, canonical_lead_name, interpolate_nans
from integrations.errors import InvalidEcgError, MissingLeadsError


class RefusalReason(StrEnum):
    """The fixed prefix of every refusal's reason (``InvalidEcgError.reason``), in the order the checks run."""

    IMPLAUSIBLE_RATE = "implausible-rate"
    TOO_SHORT = "too-short"
    MISSING_LEADS = "missing-leads"  # raised as MissingLeadsError, whose reason carries the same prefix
    NON_FINITE = "non-finite"
    IMPLAUSIBLE_AMPLITUDE = "implausible-amplitude"
    TOO_MANY_UNUSABLE_LEADS = "too-many-unusable-leads"


#: Limb leads as combinations of I and II (Einthoven, Goldberger); any two of them give the other four.
LIMB_LEADS_IN_I_II: dict[str, tuple[float, float]] = {
    "I": (1.0, 0.0),
    "II": (0.0, 1.0),
    "III": (-1.0, 1.0),
    "aVR": (-0.5, -0.5),
    "aVL": (1.0, -0.5),
    "aVF": (-0.5, 1.0),
}


@dataclass(frozen=True, slots=True)
class ValidationRules:
    """Limits a record must meet; built from the model manifest's input contract."""

    required_leads: tuple[str, ...]
    min_duration_s: float
    #: Below the model's own rate, resampling would invent signal; above this, the source is not an ECG cart.
    min_fs_hz: float
    max_fs_hz: float = 20_000.0
    #: At most this many unusable leads are repaired (imputed or dropped); with more the record is refused.
    max_bad_leads: int = 2
    #: Beyond this a sample is not a surface ECG. Diagnostic carts must record ±5 mV undistorted
    #: (IEC 60601-2-25, ANSI/AAMI EC11 input dynamic range), and the tallest QRS complexes reported
    #: (LVH, young athletes) reach ~4–5 mV; Sokolow–Lyon's LVH threshold is 3.5 mV for S V1 + R V5 together.
    max_amplitude_mv: float = 10.0
    #: Share of a lead allowed beyond ``max_amplitude_mv``: room for a pacing spike or an electrode pop,
    #: none for a unit error (µV read as mV multiplies the whole lead by 1000).
    max_implausible_fraction: float = 0.01
    #: Share of a lead that may be missing or held at one value before the lead counts as absent or flat.
    max_missing_fraction: float = 0.5
    #: Longest gap of missing samples interpolated: longer, and a straight line would stand in for a whole beat
    #: (one RR interval at 60 bpm), so the lead counts as absent.
    max_gap_s: float = 1.0


@dataclass(frozen=True, slots=True)
class SignalAssessment:
    """A record fit to be scored and what validation did to it; ``notes`` empty means scored as received."""

    #: What to score: the input record itself when nothing was done, else a copy with repaired leads.
    record: EcgRecord
    #: Limb leads recomputed from two usable limb leads (exact relations, see the module docstring).
    imputed_leads: tuple[str, ...] = ()
    #: Leads zero-filled because no relation gives them (precordial leads).
    dropped_leads: tuple[str, ...] = ()
    #: Usable leads whose missing samples were interpolated linearly.
    interpolated_leads: tuple[str, ...] = ()
    #: One line per action, each naming the lead, what was done and why.
    notes: tuple[str, ...] = ()

    @property
    def altered(self) -> bool:
        return bool(self.notes)

    def summary(self) -> str:
        """One line for a clinician or an integration engineer."""
        return "; ".join(self.notes) if self.notes else "signal plausible, scored as received"


def validate_record(record: EcgRecord, rules: ValidationRules) -> SignalAssessment:
    """Refuse ``record`` (:class:`InvalidEcgError`, reason with a fixed prefix) or say what to score."""
    _check_rate(record, rules)
    _check_duration(record, rules)
    rows = _required_rows(record, rules)
    signal_mv = np.ascontiguousarray(record.signal_mv, dtype=np.float64)  # no copy for the usual float64 C array
    measures = measure_leads(signal_mv, record.fs_hz).of_rows(rows)
    _check_finite(record.record_id, measures, rules.required_leads)
    _check_amplitude(record.record_id, signal_mv, rows, measures, rules)
    problems = lead_problems(
        measures, rules.required_leads, max_missing_fraction=rules.max_missing_fraction, max_gap_s=rules.max_gap_s
    )
    if len(problems) > rules.max_bad_leads:
        listed = ", ".join(f"{p.lead} ({p})" for p in problems)
        raise InvalidEcgError(
            record.record_id,
            f"{RefusalReason.TOO_MANY_UNUSABLE_LEADS}: {len(problems)} unusable leads "
            f"(at most {rules.max_bad_leads}): {listed}",
        )
    return _repaired(record, rows, measures, problems, rules.required_leads)


def _check_rate(record: EcgRecord, rules: ValidationRules) -> None:
    if not rules.min_fs_hz <= record.fs_hz <= rules.max_fs_hz:
        plausible = f"{rules.min_fs_hz:g}–{rules.max_fs_hz:g} Hz"
        raise InvalidEcgError(
            record.record_id,
            f"{RefusalReason.IMPLAUSIBLE_RATE}: {record.fs_hz:g} Hz is outside the plausible {plausible}",
        )


def _check_duration(record: EcgRecord, rules: ValidationRules) -> None:
    if record.duration_s < rules.min_duration_s:
        shorter = f"{record.duration_s:.2f} s is shorter than the model's {rules.min_duration_s:g} s"
        raise InvalidEcgError(record.record_id, f"{RefusalReason.TOO_SHORT}: {shorter}")


def _required_rows(record: EcgRecord, rules: ValidationRules) -> list[int]:
    """The signal row of each required lead, in ``rules.required_leads`` order; raises MissingLeadsError."""
    rows = {canonical_lead_name(name): row for row, name in enumerate(record.lead_names)}
    missing = tuple(lead for lead in rules.required_leads if lead not in rows)
    if missing:
        raise MissingLeadsError(record.record_id, missing)
    return [rows[lead] for lead in rules.required_leads]


def _check_finite(record_id: str, measures: LeadMeasures, leads: tuple[str, ...]) -> None:
    infinite = np.isinf(measures.high_mv) | np.isinf(measures.low_mv)
    if infinite.any():
        listed = ", ".join(lead for lead, bad in zip(leads, infinite.tolist(), strict=True) if bad)
        raise InvalidEcgError(record_id, f"{RefusalReason.NON_FINITE}: infinite samples in lead(s) {listed}")


def _check_amplitude(
    record_id: str, signal_mv: np.ndarray, rows: list[int], measures: LeadMeasures, rules: ValidationRules
) -> None:
    """Refuse a lead beyond the physiological range: a unit or scale error, which clipping would hide.

    Absolute values, not values about the lead's mean: the shared preprocessing clips
    absolute values, so a lead riding on a large offset would be scored as a flat line.
    """
    limit_mv = rules.max_amplitude_mv
    share = np.zeros(len(rules.required_leads))
    for i in np.flatnonzero((measures.high_mv > limit_mv) | (measures.low_mv < -limit_mv)).tolist():
        lead = signal_mv[rows[i]]
        n_present = max(measures.n_samples - int(measures.n_missing[i]), 1)
        share[i] = np.count_nonzero((lead > limit_mv) | (lead < -limit_mv)) / n_present
    beyond = np.flatnonzero(share > rules.max_implausible_fraction)
    if beyond.size == 0:
        return
    worst = int(beyond[np.argmax(share[beyond])])
    leads = rules.required_leads
    exceeds = f"lead {leads[worst]} exceeds ±{limit_mv:g} mV for {100 * share[worst]:.0f} % of samples"
    reason = f"{RefusalReason.IMPLAUSIBLE_AMPLITUDE}: {exceeds}"
    others = [leads[i] for i in beyond.tolist() if i != worst]
    if others:
        reason += f" (so do {', '.join(others)})"
    raise InvalidEcgError(record_id, reason)


def _repaired(
    record: EcgRecord,
    rows: list[int],
    measures: LeadMeasures,
    problems: tuple[LeadProblem, ...],
    leads: tuple[str, ...],
) -> SignalAssessment:
    """Interpolate gaps in usable leads, then impute or drop the unusable ones; the input when nothing to do.

    ``rows``: the signal row of each of ``leads``. Other leads of the record (X, Y, Z, ...) are kept as they are.
    """
    unusable = {problem.lead for problem in problems}
    with_gaps = [i for i, lead in enumerate(leads) if lead not in unusable and measures.n_missing[i]]
    if not problems and not with_gaps:
        return SignalAssessment(record)
    signal_mv = np.array(record.signal_mv, dtype=np.float64, copy=True)
    notes = [_gap_note(leads[i], np.isnan(signal_mv[rows[i]]), record.fs_hz) for i in with_gaps]
    if with_gaps:
        gap_rows = [rows[i] for i in with_gaps]
        signal_mv[gap_rows] = interpolate_nans(signal_mv[gap_rows])
    row_of = dict(zip(leads, rows, strict=True))
    usable_limbs = [lead for lead in LIMB_LEADS_IN_I_II if lead in row_of and lead not in unusable]
    imputed, dropped = [], []
    for problem in problems:
        if problem.lead in LIMB_LEADS_IN_I_II and len(usable_limbs) >= 2:
            sources = (usable_limbs[0], usable_limbs[1])
            source_mv = signal_mv[[row_of[source] for source in sources]]
            signal_mv[row_of[problem.lead]] = derive_limb_lead(problem.lead, sources, source_mv)
            imputed.append(problem.lead)
            notes.append(f"lead {problem.lead} imputed from {sources[0]} and {sources[1]} ({problem})")
        else:
            signal_mv[row_of[problem.lead]] = 0.0
            dropped.append(problem.lead)
            notes.append(f"lead {problem.lead} zero-filled ({problem})")
    return SignalAssessment(
        record=dataclasses.replace(record, signal_mv=signal_mv),
        imputed_leads=tuple(imputed),
        dropped_leads=tuple(dropped),
        interpolated_leads=tuple(leads[i] for i in with_gaps),
        notes=tuple(notes),
    )


def _gap_note(lead: str, missing: np.ndarray, fs_hz: float) -> str:
    n_gaps, longest = gaps(missing)
    return (
        f"lead {lead}: {np.count_nonzero(missing)} missing samples in {n_gaps} gap(s), "
        f"longest {longest / fs_hz:.3f} s, interpolated linearly"
    )


def derive_limb_lead(target: str, sources: tuple[str, str], source_mv: np.ndarray) -> np.ndarray:
    """``target`` from two other limb leads (rows of ``source_mv``), by Einthoven's and Goldberger's relations.

    Any two limb leads point in different directions of the frontal plane, so they
    determine the other four: solve target = a·first + b·second in the (I, II) basis.
    """
    basis = np.array([LIMB_LEADS_IN_I_II[source] for source in sources]).T
    a, b = np.linalg.solve(basis, np.array(LIMB_LEADS_IN_I_II[target]))
    return a * source_mv[0] + b * source_mv[1]

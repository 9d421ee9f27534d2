"""R4 ECG Observation ⇄ :class:`~integrations.ecg.EcgRecord` (LOINC 11524-6, one SampledData per lead).

One ``component`` per lead, coded with its MDC, LOINC or SNOMED CT lead code (:mod:`.ecg_leads`),
holding a ``valueSampledData``; the value is ``origin + factor × data`` in the origin's unit, converted
here to millivolts. R4 ``period`` is the milliseconds between samples, so any sampling rate decodes.
Every way an Observation can fail raises :class:`InvalidEcgObservation` with a named
:class:`EcgRejectReason`, so the caller can quarantine the resource and carry on.

Choices:

* ``lowerLimit``/``upperLimit`` are read in the origin's unit (physical values, like the decoded samples),
  not in raw counts; an ``L``/``U`` token becomes that limit, or NaN when the limit is not given (the true
  value is unknown); ``E`` is NaN.
* A lead component with ``dataAbsentReason`` (and no data) is a lead the device did not record: its row is
  all NaN, and signal validation decides whether the ECG is still usable. A required lead with no
  component at all is ``missing-leads``.
* Components whose code is not one of the 12 leads (X/Y/Z, V3R/V4R/V7, a heart rate) are ignored.
* The acquisition time is ``effectiveDateTime``, else ``effectiveInstant``, else ``effectivePeriod.start``,
  read by :func:`~integrations.site_time.parse_fhir_datetime`: a date or a time without offset is placed
  in ``site_tz``; unreadable text is ``invalid-time``. The text is kept as ``acquired_at_text``.
* ``subject`` naming a contained Patient (``#p1``) gives that Patient's first identifier value.
* A naive ``acquired_at`` is taken as UTC when encoding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Any

import numpy as np

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord, canonical_lead_name
from integrations.errors import InvalidEcgError, InvalidTimeError
from integrations.fhir.ecg_leads import LEAD_BY_MDC_CODE as LEAD_BY_MDC_CODE  # re-exported for callers
from integrations.fhir.ecg_leads import LOINC_SYSTEM, MDC_CODE_BY_LEAD, MDC_SYSTEM, lead_of_component
from integrations.fhir.errors import EcgRejectReason, InvalidEcgObservation
from integrations.fhir.sampled_data import MV_PER_UNIT, SampledDataError, Scaling, decode_data, encode_data
from integrations.fhir.validation import validate_r4
from integrations.site_time import SourceTime, parse_fhir_datetime

UCUM_SYSTEM = "http://unitsofmeasure.org"
ECG_LOINC_CODE = "11524-6"
ECG_MDC_CODE = "131328"
DEFAULT_ECG_IDENTIFIER_SYSTEM = "urn:ecg-clinical-knowledge:ecg-record-id"
DEFAULT_RESOLUTION_MV = 0.001

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class DecodedLead:
    """One lead's values in mV; ``period_ms`` is None for a lead the sender marked absent (no values yet)."""

    name: str
    values_mv: np.ndarray
    period_ms: float | None


def observation_to_ecg(
    observation: Json,
    *,
    required_leads: Sequence[str] = MODEL_LEAD_ORDER,
    source: str = "fhir",
    site_tz: tzinfo = UTC,
) -> EcgRecord:
    """Decode an ECG Observation; raises :class:`InvalidEcgObservation` naming its id and the reason.

    ``site_tz`` places a date, or a time without UTC offset, on the time line (see :mod:`integrations.site_time`).
    """
    observation_id = str(observation.get("id") or "?")
    components = observation.get("component")
    if not components:
        raise InvalidEcgObservation(observation_id, EcgRejectReason.NO_COMPONENTS, "the Observation has no component")
    if not isinstance(components, list):
        raise InvalidEcgObservation(observation_id, EcgRejectReason.MALFORMED, "component is not a list")
    leads = [_decode_lead(observation_id, name, c) for c in components if (name := lead_of_component(c)) is not None]
    period_ms = _check_leads(observation_id, leads, required_leads)
    n_samples = max(lead.values_mv.size for lead in leads)
    effective = _effective_time(observation_id, observation, site_tz)
    return EcgRecord(
        record_id=observation_id,
        signal_mv=np.vstack([lead.values_mv if lead.values_mv.size else np.full(n_samples, np.nan) for lead in leads]),
        fs_hz=1000.0 / period_ms,
        lead_names=tuple(lead.name for lead in leads),
        source=source,
        subject_id=_subject_id(observation),
        acquired_at=effective.utc if effective else None,
        source_version=(observation.get("meta") or {}).get("versionId"),
        acquired_at_text=effective.text if effective else None,
    )


def _decode_lead(observation_id: str, name: str, component: Json) -> DecodedLead:
    def reject(reason: EcgRejectReason, detail: str) -> InvalidEcgObservation:
        return InvalidEcgObservation(observation_id, reason, f"lead {name}: {detail}")

    sampled = component.get("valueSampledData")
    if sampled is None and component.get("dataAbsentReason"):
        return DecodedLead(name, np.empty(0), None)
    if not isinstance(sampled, dict) or not isinstance(sampled.get("data"), str) or not sampled["data"].strip():
        raise reject(EcgRejectReason.NO_SAMPLED_DATA, "no valueSampledData.data")
    period_ms = sampled.get("period")
    if not _is_number(period_ms) or not math.isfinite(period_ms) or period_ms <= 0:
        raise reject(EcgRejectReason.BAD_PERIOD, f"period must be a positive number of ms, got {period_ms!r}")
    factor = sampled.get("factor", 1.0)
    if not _is_number(factor) or not math.isfinite(factor) or factor == 0:
        raise reject(EcgRejectReason.BAD_FACTOR, f"factor must be finite and non-zero, got {factor!r}")
    if sampled.get("dimensions", 1) != 1:
        raise reject(EcgRejectReason.UNSUPPORTED_DIMENSIONS, f"dimensions {sampled.get('dimensions')!r}, expected 1")
    origin = sampled.get("origin") if isinstance(sampled.get("origin"), dict) else {}
    mv_per_unit = _mv_per_unit(origin)
    if mv_per_unit is None:
        raise reject(EcgRejectReason.UNKNOWN_UNITS, f"origin unit {origin.get('code') or origin.get('unit')!r}")
    scaling = Scaling(
        origin=_float_or_none(origin.get("value")) or 0.0,
        factor=float(factor),
        lower_limit=_float_or_none(sampled.get("lowerLimit")),
        upper_limit=_float_or_none(sampled.get("upperLimit")),
    )
    try:
        values = decode_data(sampled["data"], scaling)
    except SampledDataError as exc:
        raise reject(EcgRejectReason.NON_NUMERIC_DATA, str(exc)) from exc
    return DecodedLead(name, values * mv_per_unit if mv_per_unit != 1.0 else values, float(period_ms))


def _check_leads(observation_id: str, leads: list[DecodedLead], required_leads: Sequence[str]) -> float:
    """Raise unless the leads fit one record; returns their common period (ms)."""
    names = [lead.name for lead in leads]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidEcgObservation(observation_id, EcgRejectReason.DUPLICATE_LEAD, f"leads {duplicates} repeat")
    missing = [lead for lead in required_leads if lead not in names]
    if missing or not leads:
        detail = f"missing leads {', '.join(missing)}" if missing else "no component is an MDC ECG lead"
        raise InvalidEcgObservation(observation_id, EcgRejectReason.MISSING_LEADS, detail)
    recorded = [lead for lead in leads if lead.period_ms is not None]
    if not recorded:
        detail = "every lead component has a dataAbsentReason"
        raise InvalidEcgObservation(observation_id, EcgRejectReason.MISSING_LEADS, detail)
    lengths = {lead.name: lead.values_mv.size for lead in recorded}
    if len(set(lengths.values())) > 1:
        raise InvalidEcgObservation(observation_id, EcgRejectReason.LENGTH_MISMATCH, f"samples per lead {lengths}")
    periods = {lead.name: lead.period_ms for lead in recorded}
    first = recorded[0].period_ms
    assert first is not None
    if not all(math.isclose(p, first, rel_tol=1e-9) for p in periods.values() if p is not None):
        raise InvalidEcgObservation(observation_id, EcgRejectReason.RATE_MISMATCH, f"period (ms) per lead {periods}")
    return first


def _mv_per_unit(origin: Json) -> float | None:
    for key in ("code", "unit"):
        unit = origin.get(key)
        if isinstance(unit, str) and unit.strip() in MV_PER_UNIT:
            return MV_PER_UNIT[unit.strip()]
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _float_or_none(value: object) -> float | None:
    return float(value) if _is_number(value) else None  # type: ignore[arg-type]


def _subject_id(observation: Json) -> str | None:
    reference = (observation.get("subject") or {}).get("reference")
    if not reference:
        return None
    if str(reference).startswith("#"):
        return _contained_identifier(observation, str(reference)[1:])
    return str(reference).rsplit("/", 1)[-1]


def _contained_identifier(observation: Json, resource_id: str) -> str | None:
    """The first identifier value of the contained resource ``resource_id`` (a contained Patient has no URL)."""
    for resource in observation.get("contained") or ():
        if isinstance(resource, dict) and resource.get("id") == resource_id:
            identifiers = [i for i in resource.get("identifier") or () if isinstance(i, dict) and i.get("value")]
            return str(identifiers[0]["value"]) if identifiers else None
    return None


def _effective_time(observation_id: str, observation: Json, site_tz: tzinfo) -> SourceTime | None:
    period = observation.get("effectivePeriod")
    text = (
        observation.get("effectiveDateTime")
        or observation.get("effectiveInstant")
        or (period.get("start") if isinstance(period, dict) else None)
    )
    if text is None:
        return None
    try:
        if not isinstance(text, str):
            raise InvalidTimeError(str(text), "not a string")
        return parse_fhir_datetime(text, site_tz)
    except InvalidTimeError as exc:
        raise InvalidEcgObservation(
            observation_id, EcgRejectReason.INVALID_TIME, f"effective time: {exc.why}: {exc.text!r}"
        ) from exc


def ecg_to_observation(
    record: EcgRecord,
    *,
    subject_reference: str | None = None,
    identifier_system: str = DEFAULT_ECG_IDENTIFIER_SYSTEM,
    resolution_mv: float = DEFAULT_RESOLUTION_MV,
    status: str = "final",
) -> Json:
    """Encode ``record`` as a validated R4 ECG Observation: integer counts of ``resolution_mv``, NaN as ``E``."""
    observation: Json = {
        "resourceType": "Observation",
        "identifier": [{"system": identifier_system, "value": record.record_id}],
        "status": status,
        "code": {
            "coding": [
                {"system": LOINC_SYSTEM, "code": ECG_LOINC_CODE, "display": "EKG study"},
                {"system": MDC_SYSTEM, "code": ECG_MDC_CODE, "display": "MDC_ECG_ELEC_POTL"},
            ]
        },
        "component": [_lead_component(record, row, name, resolution_mv) for row, name in enumerate(record.lead_names)],
    }
    if subject_reference is not None:
        observation["subject"] = {"reference": subject_reference}
    if record.acquired_at is not None:
        acquired_at = record.acquired_at if record.acquired_at.tzinfo else record.acquired_at.replace(tzinfo=UTC)
        observation["effectiveDateTime"] = acquired_at.isoformat()
    validate_r4(observation, f"ECG Observation for record {record.record_id!r}")
    return observation


def _lead_component(record: EcgRecord, row: int, name: str, resolution_mv: float) -> Json:
    lead = canonical_lead_name(name)
    if lead not in MDC_CODE_BY_LEAD:
        raise InvalidEcgError(record.record_id, f"lead {name!r} has no MDC lead code")
    return {
        "code": {"coding": [{"system": MDC_SYSTEM, "code": MDC_CODE_BY_LEAD[lead], "display": f"MDC_ECG_LEAD_{lead}"}]},
        "valueSampledData": {
            "origin": {"value": 0, "unit": "mV", "system": UCUM_SYSTEM, "code": "mV"},
            "period": 1000.0 / record.fs_hz,
            "factor": resolution_mv,
            "dimensions": 1,
            "data": encode_data(record.signal_mv[row], factor=resolution_mv),
        },
    }

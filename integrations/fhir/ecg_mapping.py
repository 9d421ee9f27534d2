"""R4 ECG Observation ⇄ :class:`~integrations.ecg.EcgRecord` (domain.md §5).

One ``component`` per lead, coded with its MDC lead code, holding a ``valueSampledData``; the value
is ``origin + factor × data`` in the origin's unit, converted here to millivolts. R4 ``period`` is
the milliseconds between samples, so any sampling rate decodes. Every way an Observation can fail
raises :class:`InvalidEcgObservation` with a named :class:`EcgRejectReason`, so the caller can
quarantine the resource and carry on.

Choices: ``lowerLimit``/``upperLimit`` are read in the origin's unit (physical values, like the decoded
samples), not in raw counts; components with a code that is not an MDC lead (e.g. a heart rate) are
ignored; a naive ``acquired_at`` is taken as UTC when encoding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord, canonical_lead_name
from integrations.errors import InvalidEcgError
from integrations.fhir.errors import EcgRejectReason, InvalidEcgObservation
from integrations.fhir.sampled_data import MV_PER_UNIT, SampledDataError, Scaling, decode_data, encode_data
from integrations.fhir.validation import validate_r4

MDC_SYSTEM = "urn:oid:2.16.840.1.113883.6.24"
LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
ECG_LOINC_CODE = "11524-6"
ECG_MDC_CODE = "131328"
DEFAULT_ECG_IDENTIFIER_SYSTEM = "urn:ecg-clinical-knowledge:ecg-record-id"
DEFAULT_RESOLUTION_MV = 0.001

#: MDC lead codes (ISO/IEEE 11073-10101) for the 12 standard leads.
LEAD_BY_MDC_CODE: dict[str, str] = {
    "131329": "I", "131330": "II", "131389": "III", "131390": "aVR", "131391": "aVL", "131392": "aVF",
    "131331": "V1", "131332": "V2", "131333": "V3", "131334": "V4", "131335": "V5", "131336": "V6",
}  # fmt: skip
MDC_CODE_BY_LEAD: dict[str, str] = {lead: code for code, lead in LEAD_BY_MDC_CODE.items()}

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class DecodedLead:
    name: str
    values_mv: np.ndarray
    period_ms: float


def observation_to_ecg(
    observation: Json, *, required_leads: Sequence[str] = MODEL_LEAD_ORDER, source: str = "fhir"
) -> EcgRecord:
    """Decode an ECG Observation; raises :class:`InvalidEcgObservation` naming its id and the reason."""
    observation_id = str(observation.get("id") or "?")
    components = observation.get("component")
    if not components:
        raise InvalidEcgObservation(observation_id, EcgRejectReason.NO_COMPONENTS, "the Observation has no component")
    if not isinstance(components, list):
        raise InvalidEcgObservation(observation_id, EcgRejectReason.MALFORMED, "component is not a list")
    leads = [_decode_lead(observation_id, name, c) for c in components if (name := _lead_name(c)) is not None]
    _check_leads(observation_id, leads, required_leads)
    return EcgRecord(
        record_id=observation_id,
        signal_mv=np.vstack([lead.values_mv for lead in leads]),
        fs_hz=1000.0 / leads[0].period_ms,
        lead_names=tuple(lead.name for lead in leads),
        source=source,
        subject_id=_subject_id(observation),
        acquired_at=_effective_time(observation_id, observation),
        source_version=(observation.get("meta") or {}).get("versionId"),
    )


def _lead_name(component: Any) -> str | None:
    codings = ((component or {}).get("code") or {}).get("coding") or () if isinstance(component, dict) else ()
    for coding in codings:
        if coding.get("system") in (MDC_SYSTEM, None) and coding.get("code") in LEAD_BY_MDC_CODE:
            return LEAD_BY_MDC_CODE[coding["code"]]
    return None


def _decode_lead(observation_id: str, name: str, component: Json) -> DecodedLead:
    def reject(reason: EcgRejectReason, detail: str) -> InvalidEcgObservation:
        return InvalidEcgObservation(observation_id, reason, f"lead {name}: {detail}")

    sampled = component.get("valueSampledData")
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


def _check_leads(observation_id: str, leads: list[DecodedLead], required_leads: Sequence[str]) -> None:
    names = [lead.name for lead in leads]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidEcgObservation(observation_id, EcgRejectReason.DUPLICATE_LEAD, f"leads {duplicates} repeat")
    missing = [lead for lead in required_leads if lead not in names]
    if missing or not leads:
        detail = f"missing leads {', '.join(missing)}" if missing else "no component is an MDC ECG lead"
        raise InvalidEcgObservation(observation_id, EcgRejectReason.MISSING_LEADS, detail)
    lengths = {lead.name: lead.values_mv.size for lead in leads}
    if len(set(lengths.values())) > 1:
        raise InvalidEcgObservation(observation_id, EcgRejectReason.LENGTH_MISMATCH, f"samples per lead {lengths}")
    periods = {lead.name: lead.period_ms for lead in leads}
    if not all(math.isclose(p, leads[0].period_ms, rel_tol=1e-9) for p in periods.values()):
        raise InvalidEcgObservation(observation_id, EcgRejectReason.RATE_MISMATCH, f"period (ms) per lead {periods}")


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
    return str(reference).rsplit("/", 1)[-1] if reference else None


def _effective_time(observation_id: str, observation: Json) -> datetime | None:
    text = (
        observation.get("effectiveDateTime")
        or observation.get("effectiveInstant")
        or (observation.get("effectivePeriod") or {}).get("start")
    )
    if text is None:
        return None
    try:
        return datetime.fromisoformat(str(text))
    except ValueError as exc:
        raise InvalidEcgObservation(observation_id, EcgRejectReason.MALFORMED, f"effective time {text!r}") from exc


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

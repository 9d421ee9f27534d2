"""ORU^R01 ECG messages → :class:`~integrations.ecg.EcgRecord`, in two stages.

Layout we read (HL7 v2.4–2.8, IEEE 11073 MDC codes or vendors' plain names):

* one ``NA`` OBX per lead, OBX-3 the MDC lead code (``131329^MDC_ECG_ELEC_POTL_I^MDC``) or a plain or
  local lead name (``I^Lead I^L``, ``LEAD_V1``; :mod:`.mdc`), OBX-5 the samples in counts; NA OBXs that
  are not one of the 12 leads (extra leads, other waveforms) and OBXs of other types (an ``ED`` PDF or
  XML report) are ignored;
* ``NM`` OBXs for the sample rate (Hz: ``MDC_ATTR_SAMP_RATE``, ``SAMPLE_RATE``, ``Sampling Frequency``)
  and the resolution (voltage per count: ``MDC_ATTR_NU_MSMT_RES``, ``RESOLUTION``; its OBX-6 gives
  the unit, µV/mV/nV, else the lead's OBX-6 does). A lead without a resolution whose OBX-6 is a voltage
  unit holds values in that unit (one count = 1 µV for ``uV``);
* the text is decoded in MSH-18's character set, and OBX-3 text and OBX-6 units are unescaped
  (``\\S\\``, ``\\Xhh\\``…), so ``µV`` arrives whichever way it was sent;
* OBX-4 sub-IDs group them as a dotted path: an attribute applies to the lead whose sub-ID is its
  own prefix (``1.1.1.1001.1`` → lead ``1.1.1.1001``), otherwise to every lead below it (``1`` →
  leads ``1.1`` … ``1.12``, and a lead with sub-ID ``1`` too); the nearest one wins.

Stage 1, :func:`scan_ecg_oru`, is what the MLLP listener runs before it ACKs (a few ms for a
12-lead, 10 s, 500 Hz message): MSH, message type and version, and the waveform's shape — the 12
leads, their sample rate and resolution, equal lengths, only NM characters in NA values.
Stage 2, :func:`decode_ecg_oru`, is what a consumer of the inbox runs: it adds hl7apy's strict
parse and validation of the structure (segment order, required fields; ~20 ms, too slow for the
ACK path), each sample's number syntax and the timestamps, and returns the record.

Z-segments are the sender's own: they are dropped before hl7apy checks the standard structure.

Identifiers: ``record_id`` is OBR-3 (the filler's ECG id; else OBR-2, else MSH-10), so a resend
keeps its id; ``subject_id`` is PID-3.1 (first repetition); ``acquired_at`` is OBR-7 read by
:func:`~integrations.site_time.parse_hl7_dtm` (a time without offset, the usual case, is local time of
``site_tz``), with the text kept as ``acquired_at_text``; ``source_version`` is MSH-10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, tzinfo

import numpy as np
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Group, Message, Segment
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.errors import InvalidEcgError, InvalidTimeError
from integrations.hl7 import mdc
from integrations.hl7.errors import (
    ERR_REQUIRED_FIELD_MISSING,
    ERR_UNSUPPORTED_MESSAGE_TYPE,
    ERR_UNSUPPORTED_VERSION,
    EcgWaveformError,
    Hl7StructureError,
    Hl7TimeError,
    UnsupportedMessageError,
)
from integrations.hl7.message import MessageHeader, decode_text, message_codec, read_header, unescape_text
from integrations.hl7.waveform import (
    ElidedMessage,
    Separators,
    check_numeric_characters,
    count_components,
    decode_numeric_array,
    elide_waveforms,
)
from integrations.site_time import SourceTime, parse_hl7_dtm

ECG_MESSAGE_TYPE = "ORU^R01"
#: Versions whose ORU^R01 structure hl7apy knows and we accept.
SUPPORTED_VERSIONS = frozenset({"2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2"})
#: ``EcgRecord.source`` of records decoded from HL7 v2.
SOURCE = "hl7v2"


@dataclass(frozen=True, slots=True)
class Observation:
    """The OBX fields we use, split from the ER7 text; ``payload`` is the NA OBX-5 (else None).

    ``attribute`` is the waveform attribute an NM OBX names (``MDC_ATTR_SAMP_RATE``...), else None.
    """

    value_type: str
    code: str
    mnemonic: str
    sub_id: str
    value: str
    units: tuple[str, ...]
    payload: str | None
    attribute: str | None = None


@dataclass(frozen=True, slots=True)
class LeadPayload:
    """One lead's NA text and the millivolts one count stands for."""

    name: str
    payload: str
    mv_per_count: float


@dataclass(frozen=True, slots=True)
class EcgLayout:
    """What :func:`scan_ecg_oru` established: the header, and leads that will decode to one array."""

    header: MessageHeader
    fs_hz: float
    n_samples: int
    leads: tuple[LeadPayload, ...]
    elided: ElidedMessage


def check_ecg_header(header: MessageHeader) -> None:
    """Raise :class:`UnsupportedMessageError` unless this is an ORU^R01 of a version we read."""
    if header.message_type != ECG_MESSAGE_TYPE:
        raise UnsupportedMessageError(
            header.control_id,
            f"message type {header.message_type!r} is not {ECG_MESSAGE_TYPE}",
            error_code=ERR_UNSUPPORTED_MESSAGE_TYPE,
        )
    if header.version not in SUPPORTED_VERSIONS:
        raise UnsupportedMessageError(
            header.control_id, f"HL7 version {header.version!r} is not supported", error_code=ERR_UNSUPPORTED_VERSION
        )


def scan_ecg_oru(raw: bytes) -> EcgLayout:
    """Stage 1: header, type and waveform shape, without hl7apy or float conversion of the samples."""
    header = read_header(raw)
    check_ecg_header(header)
    elided = elide_waveforms(decode_text(raw).lstrip())
    observations = _observations(elided, message_codec(raw))
    leads = _leads(observations, header.control_id)
    attributes = [obs for obs in observations if obs.value_type == "NM" and obs.attribute is not None]
    rates_hz = {name: _sample_rate_hz(obs, attributes, header.control_id) for name, obs in leads}
    if len(set(rates_hz.values())) > 1:
        raise EcgWaveformError(header.control_id, f"leads sampled at different rates {rates_hz} Hz")
    payloads = tuple(_lead_payload(name, obs, attributes, header.control_id) for name, obs in leads)
    for lead in payloads:
        _check_characters(lead, elided.separators, header.control_id)
    lengths = {lead.name: count_components(lead.payload, elided.separators.component) for lead in payloads}
    if len(set(lengths.values())) > 1:
        raise EcgWaveformError(header.control_id, f"leads of different lengths {lengths} samples")
    n_samples = lengths[payloads[0].name]
    if n_samples == 0:
        raise EcgWaveformError(header.control_id, "the leads have no samples")
    fs_hz = rates_hz[payloads[0].name]
    return EcgLayout(header=header, fs_hz=fs_hz, n_samples=n_samples, leads=payloads, elided=elided)


def decode_ecg_oru(raw: bytes, *, site_tz: tzinfo = UTC) -> EcgRecord:
    """Stage 2: the ECG in an ORU^R01; raises a :class:`~integrations.hl7.errors.Hl7MessageError` subclass.

    ``site_tz`` places an OBR-7 without UTC offset (the HL7 v2 norm) on the time line.
    """
    layout = scan_ecg_oru(raw)
    control_id = layout.header.control_id
    seps = layout.elided.separators
    # OBR-7 first: hl7apy would refuse a bad date as a structure error, and it is a time error.
    acquired = _acquired_at(_obr_7(layout.elided.text, seps), seps, site_tz, control_id)
    segments = _parse_structure(_without_z_segments(layout.elided.text), control_id)
    pid = _first(segments, "PID", control_id)
    obr = _first(segments, "OBR", control_id)
    try:
        return EcgRecord(
            record_id=_first_component(obr.obr_3, seps) or _first_component(obr.obr_2, seps) or control_id,
            signal_mv=np.vstack([_lead_mv(lead, seps) for lead in layout.leads]),
            fs_hz=layout.fs_hz,
            lead_names=tuple(lead.name for lead in layout.leads),
            source=SOURCE,
            subject_id=_first_component(pid.pid_3, seps) or None,
            acquired_at=acquired.utc if acquired else None,
            source_version=control_id,
            acquired_at_text=acquired.text if acquired else None,
        )
    except (InvalidEcgError, ValueError) as exc:
        raise EcgWaveformError(control_id, str(exc)) from exc


def _acquired_at(obr_7: str, seps: Separators, site_tz: tzinfo, control_id: str) -> SourceTime | None:
    """OBR-7 (a DTM, or an old TS whose second component is the precision); empty → None."""
    text = obr_7.split(seps.repetition)[0]
    if not text.split(seps.component)[0].strip():
        return None
    try:
        return parse_hl7_dtm(text.replace(seps.component, "^"), site_tz)
    except InvalidTimeError as exc:
        raise Hl7TimeError(control_id, f"OBR-7 {exc.text!r}: {exc.why}") from exc


def _obr_7(text: str, seps: Separators) -> str:
    """OBR-7 of the first OBR as ER7 text ('' when there is none: the structure check will say so)."""
    for segment in text.split("\r"):
        if segment.startswith("OBR" + seps.field):
            fields = segment.split(seps.field)
            return fields[7] if len(fields) > 7 else ""
    return ""


def _without_z_segments(text: str) -> str:
    return "\r".join(segment for segment in text.split("\r") if not segment.startswith("Z"))


def _observations(elided: ElidedMessage, codec: str) -> list[Observation]:
    """Every OBX, split on the separators (OBX is flat enough that hl7apy is not needed to read it)."""
    seps = elided.separators

    def text(value: str) -> str:
        return unescape_text(value, codec, field=seps.field, component=seps.component)

    observations = []
    for position, segment in enumerate(elided.text.split("\r")):
        if not segment.startswith("OBX"):
            continue
        fields = [*segment.split(seps.field), *[""] * 7]  # padded: trailing empty fields may be left out
        code = [*(text(part) for part in fields[3].split(seps.component)), ""]
        observations.append(
            Observation(
                value_type=fields[2],
                code=code[0],
                mnemonic=code[1],
                sub_id=fields[4],
                value=fields[5],
                units=tuple(text(unit) for unit in fields[6].split(seps.component)),
                payload=elided.payloads.get(position),
                attribute=mdc.attribute_of(code[0], code[1]) if fields[2] == "NM" else None,
            )
        )
    return observations


def _leads(observations: list[Observation], control_id: str) -> list[tuple[str, Observation]]:
    leads = [
        (name, obs)
        for obs in observations
        if obs.value_type == "NA" and (name := mdc.lead_of(obs.code, obs.mnemonic)) is not None
    ]
    names = [name for name, _ in leads]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise EcgWaveformError(control_id, f"lead(s) {', '.join(duplicated)} sent twice")
    missing = [lead for lead in MODEL_LEAD_ORDER if lead not in names]
    if missing:
        raise EcgWaveformError(
            control_id,
            f"{len(leads)} leads, missing {', '.join(missing)}: a 12-lead ECG is required",
            error_code=ERR_REQUIRED_FIELD_MISSING,
            reject_reason="missing-leads",
        )
    return leads


def _sample_rate_hz(lead: Observation, attributes: list[Observation], control_id: str) -> float:
    rate = _attribute_for(lead, attributes, mdc.SAMPLE_RATE_MNEMONIC, control_id)
    if not mdc.is_sample_rate_unit(rate.units):
        raise EcgWaveformError(control_id, f"sample rate unit {'^'.join(rate.units)!r} is not Hz")
    fs_hz = _number(rate.value, f"{mdc.SAMPLE_RATE_MNEMONIC} of {lead.mnemonic or lead.code}", control_id)
    if fs_hz <= 0:
        raise EcgWaveformError(control_id, f"sample rate must be positive, got {rate.value} Hz")
    return fs_hz


def _lead_payload(name: str, lead: Observation, attributes: list[Observation], control_id: str) -> LeadPayload:
    lead_mv_per_unit = mdc.millivolts_per_unit(lead.units)
    has_resolution = any(obs.attribute == mdc.RESOLUTION_MNEMONIC for obs in attributes)
    if lead_mv_per_unit is not None and not has_resolution:
        # No resolution anywhere, the values are in the lead's own unit (a Philips-like export in µV).
        return LeadPayload(name=name, payload=lead.payload or "", mv_per_count=lead_mv_per_unit)
    resolution = _attribute_for(lead, attributes, mdc.RESOLUTION_MNEMONIC, control_id)
    per_count = _number(resolution.value, f"{mdc.RESOLUTION_MNEMONIC} of lead {name}", control_id)
    mv_per_unit = mdc.millivolts_per_unit(resolution.units) or lead_mv_per_unit
    if mv_per_unit is None or per_count <= 0:
        raise EcgWaveformError(
            control_id, f"lead {name}: resolution {resolution.value!r} is not a positive voltage per count"
        )
    return LeadPayload(name=name, payload=lead.payload or "", mv_per_count=per_count * mv_per_unit)


def _attribute_for(lead: Observation, attributes: list[Observation], mnemonic: str, control_id: str) -> Observation:
    """The attribute nearest the lead in the OBX-4 tree: the lead's own child first, else its closest ancestor."""
    candidates = [obs for obs in attributes if obs.attribute == mnemonic]
    own = [obs for obs in candidates if lead.sub_id and obs.sub_id.startswith(lead.sub_id + ".")]
    ancestors = [obs for obs in candidates if _is_ancestor_or_same(obs.sub_id, lead.sub_id)]
    nearest_length = max((len(obs.sub_id) for obs in ancestors), default=-1)
    nearest = own or [obs for obs in ancestors if len(obs.sub_id) == nearest_length]
    if len(nearest) != 1:
        found = "no" if not nearest else f"{len(nearest)} competing"
        raise EcgWaveformError(
            control_id,
            f"{found} {mnemonic} OBX for lead {lead.mnemonic or lead.code} (OBX-4 {lead.sub_id!r})",
            error_code=ERR_REQUIRED_FIELD_MISSING,
        )
    return nearest[0]


def _is_ancestor_or_same(sub_id: str, lead_sub_id: str) -> bool:
    return sub_id in ("", lead_sub_id) or lead_sub_id.startswith(sub_id + ".")


def _number(text: str, what: str, control_id: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise EcgWaveformError(control_id, f"{what} is not a number: {text!r}") from exc
    if not math.isfinite(value):
        raise EcgWaveformError(control_id, f"{what} is not finite: {text!r}")
    return value


def _check_characters(lead: LeadPayload, separators: Separators, control_id: str) -> None:
    try:
        check_numeric_characters(lead.payload, separators.component)
    except ValueError as exc:
        raise EcgWaveformError(control_id, f"lead {lead.name} NA values: {exc}") from exc


def _lead_mv(lead: LeadPayload, separators: Separators) -> np.ndarray:
    try:
        return decode_numeric_array(lead.payload, separators.component) * lead.mv_per_count
    except ValueError as exc:
        raise ValueError(f"lead {lead.name} NA values: {exc}") from exc


def _parse_structure(text: str, control_id: str) -> list[Segment]:
    """Segments in message order, after hl7apy has parsed and strictly validated the structure."""
    try:
        message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        message.validate()
    except (HL7apyException, ValueError) as exc:  # hl7apy raises ValueError for a bad date, NM or SI value
        reason = f"invalid ORU^R01 structure: {exc}"
        raise Hl7StructureError(control_id, reason) from exc
    return _segments_in_order(message)


def _segments_in_order(element: Message | Group) -> list[Segment]:
    segments: list[Segment] = []
    for child in element.children:
        segments.extend([child] if isinstance(child, Segment) else _segments_in_order(child))
    return segments


def _first(segments: list[Segment], name: str, control_id: str) -> Segment:
    for segment in segments:
        if segment.name == name:
            return segment
    raise Hl7StructureError(control_id, f"no {name} segment", error_code=ERR_REQUIRED_FIELD_MISSING)


def _first_component(field: object, separators: Separators) -> str:
    """The first component of a field's first repetition, as ER7 text ('' when absent)."""
    text: str = field.to_er7()  # type: ignore[attr-defined]
    return text.split(separators.repetition)[0].split(separators.component)[0]

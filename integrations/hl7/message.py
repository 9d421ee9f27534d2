"""What every HL7 v2 message shares: its MSH header, text decoding and DTM timestamps.

The header is read with a plain split, not hl7apy: the listener needs MSH-10 to answer even
a message hl7apy would refuse, and the dedupe key before doing any expensive work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message

from integrations.hl7.errors import ERR_REQUIRED_FIELD_MISSING, Hl7ParseError

DEFAULT_VERSION = "2.5.1"


@dataclass(frozen=True, slots=True)
class Hl7Party:
    """One end of an HL7 conversation: MSH-3/MSH-5 (application) and MSH-4/MSH-6 (facility)."""

    application: str
    facility: str


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """The MSH fields we route, dedupe and acknowledge on; ``message_type`` is ``"ORU^R01"``."""

    sender: Hl7Party
    receiver: Hl7Party
    control_id: str
    message_type: str
    version: str
    processing_id: str


def decode_text(raw: bytes) -> str:
    """Message text for parsing. Undecodable bytes are replaced: the raw bytes are what we store."""
    return raw.decode("utf-8", errors="replace")


def read_header(raw: bytes) -> MessageHeader:
    """The MSH header of ``raw``; raises :class:`Hl7ParseError` when it is not an HL7 v2 message."""
    first = _first_segment(raw)
    if not re.match(r"MSH[^\w\s]", first):
        raise Hl7ParseError(None, "not an HL7 v2 message (no MSH segment)")
    fields = first.split(first[3])
    encoding = fields[1] if len(fields) > 1 else ""
    if len(fields) < 12 or not 4 <= len(encoding) <= 5 or len(set(encoding)) != len(encoding):
        raise Hl7ParseError(None, "MSH is too short or its encoding characters are invalid")
    component = fields[1][0]
    control_id = fields[9]
    if not control_id:
        raise Hl7ParseError(None, "MSH-10 (message control id) is empty", error_code=ERR_REQUIRED_FIELD_MISSING)
    return MessageHeader(
        sender=Hl7Party(application=fields[2], facility=fields[3]),
        receiver=Hl7Party(application=fields[4], facility=fields[5]),
        control_id=control_id,
        message_type="^".join(fields[8].split(component)[:2]),
        version=fields[11].split(component)[0],
        processing_id=fields[10].split(component)[0],
    )


def _first_segment(raw: bytes) -> str:
    """The first non-blank segment, decoded alone: the rest of a large message is not touched."""
    text = raw.lstrip()
    ends = [position for position in (text.find(b"\r"), text.find(b"\n")) if position >= 0]
    return decode_text(text[: min(ends)] if ends else text)


def format_dtm(moment: datetime) -> str:
    """HL7 DTM (``YYYYMMDDHHMMSS[+/-ZZZZ]``); an aware datetime keeps its offset."""
    text = moment.strftime("%Y%m%d%H%M%S")
    return text + moment.strftime("%z") if moment.tzinfo is not None else text


def parse_dtm(text: str) -> datetime | None:
    """Parse HL7 DTM at any precision (year to fractional seconds, optional offset); empty → None.

    Raises ``ValueError`` for text that is not a DTM.
    """
    match = _DTM.fullmatch(text.strip())
    if match is None:
        if not text.strip():
            return None
        raise ValueError(f"not an HL7 DTM: {text!r}")
    # Missing trailing parts default to the start of the period: "2026" is 2026-01-01 00:00:00.
    digits = match["digits"] + "0101000000"[len(match["digits"]) - 4 :]
    moment = datetime.strptime(digits, "%Y%m%d%H%M%S")
    microsecond = int((match["fraction"] or "0").ljust(6, "0")[:6])
    tzinfo = _offset(match["offset"]) if match["offset"] else None
    return moment.replace(microsecond=microsecond, tzinfo=tzinfo)


_DTM = re.compile(r"(?P<digits>\d{4}(?:\d{2}){0,5})(?:\.(?P<fraction>\d{1,4}))?(?P<offset>[+-]\d{4})?")


def _offset(text: str) -> timezone:
    sign = -1 if text[0] == "-" else 1
    delta = timedelta(hours=int(text[1:3]), minutes=int(text[3:5]))
    return UTC if not delta else timezone(sign * delta)


def new_message(
    message_type: str, *, control_id: str, sender: Hl7Party, receiver: Hl7Party, sent_at: datetime
) -> Message:
    """An hl7apy v2.5.1 message with its MSH filled in; ``message_type`` is MSH-9, e.g. ``ORU^R01^ORU_R01``."""
    message = Message(message_type.split("^")[2], version=DEFAULT_VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    message.msh.msh_3 = sender.application
    message.msh.msh_4 = sender.facility
    message.msh.msh_5 = receiver.application
    message.msh.msh_6 = receiver.facility
    message.msh.msh_7 = format_dtm(sent_at)
    message.msh.msh_9 = message_type
    message.msh.msh_10 = control_id
    message.msh.msh_11 = "P"
    message.msh.msh_12 = DEFAULT_VERSION
    return message


def escape_text(text: str, *, max_length: int | None = None) -> str:
    """Free text made safe for one ER7 field (separators escaped, line breaks flattened), optionally cut."""
    flat = " ".join(text.split())[:max_length]
    escapes = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}
    return "".join(escapes.get(char, char) for char in flat)

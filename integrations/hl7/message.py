"""What every HL7 v2 message shares: its MSH header, text decoding (MSH-18 character sets, escapes).

The header is read with a plain split, not hl7apy: the listener needs MSH-10 to answer even
a message hl7apy would refuse, and the dedupe key before doing any expensive work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

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


#: MSH-18 (HL7 table 0211) → Python codec. Senders that declare ASCII (or nothing) still put bytes above 127
#: in (a µ in a unit): such text is read as UTF-8 if it is valid UTF-8, else as Latin-1, which maps every byte.
_ASCII_DECLARED = "ascii-declared"
_CODECS: dict[str, str] = {
    "": _ASCII_DECLARED, "ASCII": _ASCII_DECLARED, "UNICODE UTF-8": "utf-8", "UNICODE": "utf-8",
    "8859/1": "latin-1", "8859/2": "iso8859-2", "8859/5": "iso8859-5", "8859/7": "iso8859-7", "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
}  # fmt: skip


def decode_text(raw: bytes) -> str:
    """Message text in the character set MSH-18 declares. Undecodable bytes are replaced: the raw bytes are stored."""
    return raw.decode(message_codec(raw), errors="replace")


def message_codec(raw: bytes) -> str:
    """The Python codec for MSH-18's first repetition (an unknown one reads as UTF-8)."""
    first = _first_segment_bytes(raw).decode("latin-1")  # MSH's own fields are ASCII
    fields = first.split(first[3]) if len(first) > 5 and first.startswith("MSH") else []
    declared = fields[17].split(first[5])[0].strip().upper() if len(fields) > 17 else ""
    codec = _CODECS.get(declared, "utf-8")
    if codec != _ASCII_DECLARED or raw.isascii():  # isascii: a C-speed scan, the usual case on the ACK path
        return "utf-8" if codec == _ASCII_DECLARED else codec
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def unescape_text(text: str, codec: str = "utf-8", *, field: str = "|", component: str = "^") -> str:
    """ER7 text with its escapes resolved: ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, and ``\\Xhh…\\`` as bytes in ``codec``."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda match: _unescape(match.group(1), codec, field, component), text)


_ESCAPE = re.compile(r"\\([^\\]*)\\")


def _unescape(sequence: str, codec: str, field: str, component: str) -> str:
    simple = {"F": field, "S": component, "T": "&", "R": "~", "E": "\\"}
    if sequence in simple:
        return simple[sequence]
    if sequence[:1] == "X" and len(sequence) % 2 == 1:
        try:
            return bytes.fromhex(sequence[1:]).decode(codec, errors="replace")
        except ValueError:
            pass
    return ""  # formatting escapes (\\H\\, \\.br\\) and unknown ones carry no text


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
    return decode_text(_first_segment_bytes(raw))


def _first_segment_bytes(raw: bytes) -> bytes:
    text = raw.lstrip()
    ends = [position for position in (text.find(b"\r"), text.find(b"\n")) if position >= 0]
    return text[: min(ends)] if ends else text


def format_dtm(moment: datetime) -> str:
    """HL7 DTM (``YYYYMMDDHHMMSS[+/-ZZZZ]``); an aware datetime keeps its offset."""
    text = moment.strftime("%Y%m%d%H%M%S")
    return text + moment.strftime("%z") if moment.tzinfo is not None else text


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

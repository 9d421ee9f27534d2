"""HL7 v2 acknowledgements (original mode): building ours with hl7apy, reading a peer's.

MSA-1 is ``AA`` (accepted: committed), ``AE`` (error) or ``AR`` (rejected); MSA-2 echoes the
acknowledged message's MSH-10. A negative ACK carries an ERR segment: ERR-3 the HL7 table 0357
code, ERR-4 severity ``E``, ERR-8 the reason in words.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from integrations.hl7.errors import AckError, Hl7MessageError
from integrations.hl7.message import Hl7Party, MessageHeader, decode_text, escape_text, new_message, read_header

ACCEPTED = "AA"
#: ERR-8 (TX) is limited to 250 characters in v2.5.1.
_MAX_USER_MESSAGE_CHARS = 250
_UNKNOWN_PARTY = Hl7Party(application="", facility="")


@dataclass(frozen=True, slots=True)
class Ack:
    """A peer's answer: MSA-1, MSA-2 and, for a negative ACK, the error code and text."""

    code: str
    acknowledged_control_id: str
    error_code: str = ""
    text: str = ""

    @property
    def accepted(self) -> bool:
        return self.code in (ACCEPTED, "CA")


def build_ack(
    acknowledged: MessageHeader | None,
    *,
    sender: Hl7Party,
    error: Hl7MessageError | None = None,
    code: str | None = None,
    sent_at: datetime | None = None,
) -> bytes:
    """The ACK we send for ``acknowledged`` (None when its MSH could not be read: MSA-2 is then empty).

    Without ``error`` it is ``AA``; with one, ``error.ack_code`` (or ``code``) and an ERR segment.
    """
    # MSH-9 of an ACK repeats the acknowledged trigger event: ACK^R01^ACK for an ORU^R01.
    event = acknowledged.message_type.partition("^")[2] if acknowledged else ""
    message = new_message(
        f"ACK^{event or 'R01'}^ACK",
        control_id=_next_ack_control_id(),
        sender=sender,
        receiver=acknowledged.sender if acknowledged else _UNKNOWN_PARTY,
        sent_at=sent_at or datetime.now(UTC),
    )
    message.msa.msa_1 = code or (error.ack_code if error else ACCEPTED)
    message.msa.msa_2 = escape_text(acknowledged.control_id) if acknowledged else ""
    if error is not None:
        message.err.err_3 = f"{error.error_code}^{_ERROR_NAMES.get(error.error_code, '')}^HL70357"
        message.err.err_4 = "E"
        message.err.err_8 = escape_text(error.reason, max_length=_MAX_USER_MESSAGE_CHARS)
    return message.to_er7().encode("ascii", errors="replace")


def parse_ack(raw: bytes, *, control_id: str) -> Ack:
    """Read a peer's ACK to our message ``control_id``; raises :class:`AckError` if it is not an ACK."""
    try:
        header = read_header(raw)
    except Hl7MessageError as exc:
        raise AckError(control_id, f"the answer is not a readable ACK: {exc}") from exc
    if not header.message_type.startswith("ACK"):
        raise AckError(control_id, f"the answer is a {header.message_type!r} message, not an ACK")
    try:
        message = parse_message(decode_text(raw).strip(), validation_level=VALIDATION_LEVEL.TOLERANT)
        return _read_ack(message)
    except (HL7apyException, ValueError) as exc:  # hl7apy raises ValueError for a bad date or number
        raise AckError(control_id, f"the ACK does not parse: {exc}") from exc


def _read_ack(message: Message) -> Ack:
    msa = message.msa
    err = message.err if "ERR" in [child.name for child in message.children] else None
    return Ack(
        code=msa.msa_1.to_er7(),
        acknowledged_control_id=msa.msa_2.to_er7(),
        error_code=err.err_3.to_er7().split("^")[0] if err is not None else "",
        text=(err.err_8.to_er7() if err is not None else "") or msa.msa_3.to_er7(),
    )


def check_ack(ack: Ack, *, control_id: str) -> None:
    """Raise :class:`AckError` unless ``ack`` accepts our message ``control_id``."""
    if ack.acknowledged_control_id != control_id:
        raise AckError(
            control_id, f"the ACK answers message {ack.acknowledged_control_id!r} (MSA-2), not ours", ack_code=ack.code
        )
    if not ack.accepted:
        detail = f" (ERR {ack.error_code}: {ack.text})" if ack.error_code or ack.text else ""
        raise AckError(control_id, f"the peer answered {ack.code}{detail}", ack_code=ack.code)


_ERROR_NAMES = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "200": "Unsupported message type",
    "203": "Unsupported version id",
    "207": "Application internal error",
}
#: ACK control ids: unique per process (pid) and per ACK (counter), within MSH-10's 20 characters.
_ack_counter = itertools.count(1)


def _next_ack_control_id() -> str:
    return f"ACK{os.getpid() % 100000:05d}{next(_ack_counter):012d}"

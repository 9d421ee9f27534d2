"""The fast path for NA (numeric array) waveforms.

hl7apy builds one Python object per NA component, so a 12-lead, 10 s, 500 Hz ORU takes
seconds to parse. We therefore cut OBX-5 out of every NA segment before hl7apy sees the
message (:func:`elide_waveforms`), let hl7apy parse and validate the small remainder, and
turn the cut-out payloads into numpy arrays here (:func:`decode_numeric_array`). The
encoder does the reverse (:func:`splice_waveforms`).

Segments are addressed by their position in the message (0 = MSH; blank lines dropped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

#: OBX-5 is field 5 of the segment when split on the field separator (field 0 is "OBX").
_OBX_VALUE_FIELD = 5
_OBX_VALUE_TYPE_FIELD = 2
_NA_VALUE_TYPE = "NA"


@dataclass(frozen=True, slots=True)
class Separators:
    """The encoding characters a message declares in MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"


@dataclass(frozen=True, slots=True)
class ElidedMessage:
    """A message with its NA payloads removed; ``payloads`` maps segment position → raw OBX-5 text."""

    text: str
    payloads: dict[int, str]
    separators: Separators


def split_segments(text: str) -> list[str]:
    """Segments of an ER7 message; tolerates ``\\n`` and ``\\r\\n`` as terminators, drops blank lines."""
    if "\n" in text:  # rare, and replacing costs more than the check on a 12-lead message
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    return [segment for segment in text.split("\r") if segment.strip()]


def read_separators(first_segment: str) -> Separators:
    """Field, component and repetition separators from an MSH segment (``MSH|^~\\&|...``)."""
    return Separators(field=first_segment[3], component=first_segment[4], repetition=first_segment[5])


def elide_waveforms(text: str) -> ElidedMessage:
    """Cut OBX-5 out of every NA OBX; the other segments are left as they are, joined by ``\\r``."""
    segments = split_segments(text)
    separators = read_separators(segments[0])
    payloads: dict[int, str] = {}
    for position, segment in enumerate(segments):
        if not segment.startswith("OBX"):
            continue
        fields = segment.split(separators.field)
        if len(fields) > _OBX_VALUE_FIELD and fields[_OBX_VALUE_TYPE_FIELD] == _NA_VALUE_TYPE:
            payloads[position] = fields[_OBX_VALUE_FIELD]
            fields[_OBX_VALUE_FIELD] = ""
            segments[position] = separators.field.join(fields)
    return ElidedMessage(text="\r".join(segments), payloads=payloads, separators=separators)


def splice_waveforms(text: str, payloads: dict[int, str]) -> str:
    """Put NA payloads into OBX-5 of the segments at the given positions (the encoder's half)."""
    segments = split_segments(text)
    separators = read_separators(segments[0])
    for position, payload in payloads.items():
        fields = segments[position].split(separators.field)
        fields.extend([""] * (_OBX_VALUE_FIELD + 1 - len(fields)))
        fields[_OBX_VALUE_FIELD] = payload
        segments[position] = separators.field.join(fields)
    return "\r".join(segments)


def encode_numeric_array(counts: np.ndarray, component_separator: str = "^") -> str:
    """ER7 text of an NA value: integers joined by the component separator; NaN becomes an empty component."""
    return component_separator.join("" if np.isnan(value) else str(int(value)) for value in counts.tolist())


def check_numeric_characters(payload: str, component_separator: str = "^") -> None:
    """Raise ``ValueError`` naming the first component with a character HL7 NM does not allow.

    NM is an optional sign, digits and a decimal point: letters, ``NaN``, ``inf`` and exponents are out.
    A C-speed scan, cheap enough for the ACK path.
    """
    allowed = _NM_CHARACTERS + component_separator.encode()
    # Deleting the allowed bytes is ~10x faster than a regex scan; the regex only runs to name the culprit.
    if payload.isascii() and not payload.encode("ascii").translate(None, allowed):
        return
    bad = re.search(rf"[^0-9.+\- {re.escape(component_separator)}]", payload)
    assert bad is not None
    component = payload.count(component_separator, 0, bad.start()) + 1
    raise ValueError(f"non-numeric character {bad.group()!r} in component {component}")


_NM_CHARACTERS = b"0123456789.+- "


def count_components(payload: str, component_separator: str = "^") -> int:
    """Number of samples in an NA payload (empty components included)."""
    return payload.count(component_separator) + 1 if payload else 0


def decode_numeric_array(payload: str, component_separator: str = "^") -> np.ndarray:
    """Float64 samples of an NA payload; an empty component is a missing sample (NaN).

    Raises ``ValueError`` for characters NM does not allow and for malformed numbers (``1-2``).
    """
    check_numeric_characters(payload, component_separator)
    if not payload:
        return np.empty(0)
    components = payload.split(component_separator)
    try:
        if "." not in payload and "" not in components:
            # Whole counts, the common case: integer parsing is twice as fast as float parsing.
            return np.array(components, dtype=np.int64).astype(np.float64)
        return np.array([component or "nan" for component in components], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"malformed number: {exc}") from exc

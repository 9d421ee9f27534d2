"""The patient's identifier in an HL7 v2 message: PID-3 (CX) with the authority that assigned it.

PID-3 is ``ID^check digit^check scheme^assigning authority^type code``, the assigning authority an HD
(``namespace id&universal id&universal id type``, e.g. ``HOSP&1.2.840.99.1&ISO``). A receiver that
looks the patient up elsewhere (a FHIR ``Patient?identifier=``) needs the authority as well as the
id: an MRN means nothing without the register that issued it. Read with a plain split, like the
header (:mod:`integrations.hl7.message`): it costs nothing beside the full decode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from integrations.hl7.message import decode_text
from integrations.hl7.waveform import split_segments

#: MSH-2's encoding characters when a message declares fewer than four (v2.5.1 defaults).
_DEFAULT_ENCODING = "^~\\&"


@dataclass(frozen=True, slots=True)
class PatientIdentifier:
    """PID-3's first repetition: the id (CX.1) and its assigning authority (CX.4, an HD), unescaped."""

    value: str
    #: HD.1, the authority's local name (``HOSP``); empty when not sent.
    authority: str = ""
    #: HD.2, the authority's universal id (an OID when ``authority_id_type`` is ``ISO``); empty when not sent.
    authority_id: str = ""
    #: HD.3: ``ISO``, ``URI``, ``DNS``...; empty when not sent.
    authority_id_type: str = ""

    def __str__(self) -> str:
        authority = "&".join(part for part in (self.authority, self.authority_id, self.authority_id_type) if part)
        return f"{self.value}^^^{authority}" if authority else self.value


def read_patient_identifier(raw: bytes) -> PatientIdentifier | None:
    """PID-3's first repetition of an ER7 message; None when there is no PID or its PID-3.1 is empty."""
    segments = split_segments(decode_text(raw).lstrip())
    if not segments or len(segments[0]) < 4:
        return None
    field_separator = segments[0][3]
    encoding = [*segments[0].split(field_separator), ""][1]
    component, repetition, escape, subcomponent = (encoding + _DEFAULT_ENCODING[len(encoding) :])[:4]
    pid = next((segment for segment in segments if segment.startswith("PID" + field_separator)), None)
    if pid is None:
        return None
    fields = pid.split(field_separator)
    first = fields[3].split(repetition)[0] if len(fields) > 3 else ""
    cx = [*first.split(component), "", "", "", ""]
    hd = [*cx[3].split(subcomponent), "", "", ""]
    separators = {"F": field_separator, "S": component, "R": repetition, "E": escape, "T": subcomponent}
    value, authority, authority_id, authority_id_type = (
        _unescape(text, escape, separators).strip() for text in (cx[0], hd[0], hd[1], hd[2])
    )
    if not value:
        return None
    return PatientIdentifier(value, authority, authority_id, authority_id_type.upper())


def _unescape(text: str, escape: str, separators: dict[str, str]) -> str:
    """The text with the separator escapes (``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\``) turned back into their characters."""
    if escape not in text:
        return text
    pattern = re.compile(f"{re.escape(escape)}([FSRET]){re.escape(escape)}")
    return pattern.sub(lambda match: separators[match[1]], text)

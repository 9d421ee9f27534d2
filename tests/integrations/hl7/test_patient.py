"""PID-3 with its assigning authority, read the way an independent HL7 parser (python-hl7) reads it."""

from __future__ import annotations

import hl7
import pytest

from integrations.hl7 import decode_ecg_oru, encode_ecg_oru
from integrations.hl7.patient import PatientIdentifier, read_patient_identifier

HEADER = "MSH|^~\\&|MUSE|CARDIOLOGY|AGENT|HOSP|20260102030405||ORU^R01^ORU_R01|M-1|P|2.5.1"

# PID-3 as different senders write it.
VENDOR_PID3 = {
    "namespace, OID and type code": "MRN-9^^^HOSP&1.2.840.114350.1.13.99&ISO^MR",
    "check digit and a second repetition": "12345^7^M10^HOSP&2.16.840.1.113883.3.72&ISO^MR~999-99-9999^^^SSA^SS",
    "namespace only": "00042^^^STMARYS^MR",
    "universal id without namespace": "A7^^^&urn:example:mrn&URI^PI",
    "bare id": "778899",
    "escaped ampersand in the id": "AB\\T\\12^^^HOSP^MR",
    "lower-case universal id type": "X-1^^^HOSP&1.2.3.4&iso",
}


def _python_hl7(pid3: str) -> PatientIdentifier:
    """What python-hl7 makes of the same field: CX.1 and the three HD subcomponents of CX.4."""
    message = hl7.parse(f"{HEADER}\rPID|||{pid3}||DOE^JANE")

    def part(component: int, subcomponent: int = 1) -> str:  # unescaped by python-hl7; absent parts raise
        try:
            return message.extract_field("PID", 1, 3, 1, component, subcomponent)
        except IndexError:
            return ""

    return PatientIdentifier(part(1), part(4, 1), part(4, 2), part(4, 3).upper())


@pytest.mark.parametrize("pid3", VENDOR_PID3.values(), ids=VENDOR_PID3.keys())
def test_pid3_reads_as_python_hl7_reads_it(pid3):
    raw = f"{HEADER}\rPID|||{pid3}||DOE^JANE\rOBR|1||E-1|11524-6^EKG study^LN".encode()
    assert read_patient_identifier(raw) == _python_hl7(pid3)


def test_the_authority_and_its_oid_are_kept_and_the_first_repetition_is_the_patient():
    raw = f"{HEADER}\rPID|||{VENDOR_PID3['check digit and a second repetition']}||DOE".encode()
    assert read_patient_identifier(raw) == PatientIdentifier("12345", "HOSP", "2.16.840.1.113883.3.72", "ISO")


def test_a_message_declaring_other_encoding_characters_is_read_with_them():
    header = HEADER.replace("|^~\\&|", "|$*/#|").replace("^", "$")
    raw = f"{header}\rPID|||AB/T/12$$$HOSP#1.2.3.4#ISO$MR*999$$$SSA||DOE".encode()
    assert read_patient_identifier(raw) == PatientIdentifier("AB#12", "HOSP", "1.2.3.4", "ISO")


def test_segments_may_end_with_newlines():
    raw = f"{HEADER}\r\nPID|||00042^^^STMARYS^MR||DOE\r\n".encode()
    assert read_patient_identifier(raw) == PatientIdentifier("00042", "STMARYS")


@pytest.mark.parametrize(
    "rest", ["OBR|1||E-1", "PID|1||||DOE^JANE", "PID|||^^^HOSP&1.2.3&ISO||DOE"], ids=["no PID", "no PID-3", "no id"]
)
def test_no_identifier_is_none(rest):
    assert read_patient_identifier(f"{HEADER}\r{rest}".encode()) is None


def test_our_encoder_s_bare_subject_id_has_no_authority(ecg):
    raw = encode_ecg_oru(ecg, control_id="MSG-1")
    assert read_patient_identifier(raw) == PatientIdentifier(decode_ecg_oru(raw).subject_id)


def test_its_text_form_is_pid3_without_the_type_code():
    assert str(PatientIdentifier("MRN-9", "HOSP", "1.2.3", "ISO")) == "MRN-9^^^HOSP&1.2.3&ISO"
    assert str(PatientIdentifier("778899")) == "778899"

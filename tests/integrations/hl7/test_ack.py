"""ACKs we build, read by python-hl7; ACKs we read and check."""

from __future__ import annotations

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from integrations.hl7 import AckError, EcgWaveformError, Hl7Party, build_ack, check_ack, parse_ack, read_header

ORIGINAL = b"MSH|^~\\&|CART|CARDIO|AGENT|HOSP|20260101||ORU^R01^ORU_R01|MSG-7|P|2.5.1\rPID|||1||X"
US = Hl7Party(application="AGENT", facility="HOSP")


def test_an_aa_ack_echoes_msh10_and_addresses_the_sender():
    ack = hl7.parse(build_ack(read_header(ORIGINAL), sender=US).decode())
    assert str(ack.segment("MSA")[1]) == "AA"
    assert str(ack.segment("MSA")[2]) == "MSG-7"
    assert str(ack.segment("MSH")[9]) == "ACK^R01^ACK"
    assert (str(ack.segment("MSH")[5]), str(ack.segment("MSH")[6])) == ("CART", "CARDIO")


def test_an_error_ack_carries_the_code_and_escaped_reason():
    error = EcgWaveformError("MSG-7", "lead I | bad ^ value")
    ack = hl7.parse(build_ack(read_header(ORIGINAL), sender=US, error=error).decode())
    assert str(ack.segment("MSA")[1]) == "AE"
    assert str(ack.segment("ERR")[3][0][0]) == "102"
    assert ack.unescape(str(ack.segment("ERR")[8])) == "lead I | bad ^ value"


def test_ack_control_ids_are_unique():
    first, second = (read_header(build_ack(None, sender=US)).control_id for _ in range(2))
    assert first != second


def test_parse_and_check_an_accepting_ack():
    ack = parse_ack(build_ack(read_header(ORIGINAL), sender=US), control_id="MSG-7")
    check_ack(ack, control_id="MSG-7")
    assert ack.accepted


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"garbage", "not a readable ACK", id="not HL7"),
        pytest.param(ORIGINAL, r"is a 'ORU\^R01' message, not an ACK", id="not an ACK"),
    ],
)
def test_an_answer_that_is_not_an_ack_is_an_ack_error(raw, reason):
    with pytest.raises(AckError, match=reason):
        parse_ack(raw, control_id="MSG-7")


def test_our_acks_pass_hl7apy_strict_validation():
    for ack in (
        build_ack(read_header(ORIGINAL), sender=US),
        build_ack(read_header(ORIGINAL), sender=US, error=EcgWaveformError("MSG-7", "bad")),
    ):
        assert parse_message(ack.decode(), validation_level=VALIDATION_LEVEL.STRICT).validate()

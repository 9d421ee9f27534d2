"""What every message shares: the character set MSH-18 declares, and HL7 escapes in text."""

from __future__ import annotations

import pytest

from integrations.hl7.mdc import attribute_of, lead_of, millivolts_per_unit
from integrations.hl7.message import decode_text, message_codec, unescape_text

MSH = "MSH|^~\\&|CART|CARDIO|AGENT|HOSP|20261120031400||ORU^R01^ORU_R01|M1|P|2.5||||||{charset}\rOBX|1|NA|I||1|{unit}"


@pytest.mark.parametrize(
    ("charset", "raw_unit", "codec"),
    [
        ("8859/1", "µV".encode("latin-1"), "latin-1"),
        ("UNICODE UTF-8", "µV".encode(), "utf-8"),
        ("ASCII", b"uV", "utf-8"),
        ("ASCII", "µV".encode("latin-1"), "latin-1"),  # declared ASCII, sent Latin-1: still read
        ("", "µV".encode(), "utf-8"),
    ],
)
def test_the_text_is_decoded_in_the_declared_character_set(charset, raw_unit, codec):
    raw = MSH.format(charset=charset, unit="UNIT").encode("ascii").replace(b"UNIT", raw_unit)

    assert message_codec(raw) == codec
    assert decode_text(raw).endswith("|" + raw_unit.decode(codec))


@pytest.mark.parametrize(
    ("text", "codec", "plain"),
    [
        ("SMITH\\T\\JONES", "utf-8", "SMITH&JONES"),
        ("a\\F\\b\\S\\c\\R\\d\\E\\e", "utf-8", "a|b^c~d\\e"),
        ("\\XB5\\V", "latin-1", "µV"),
        ("\\XC2B5\\V", "utf-8", "µV"),
        ("line\\.br\\break", "utf-8", "linebreak"),
        ("no escapes", "utf-8", "no escapes"),
    ],
)
def test_escapes_are_resolved(text, codec, plain):
    assert unescape_text(text, codec) == plain


@pytest.mark.parametrize(
    ("code", "text", "lead"),
    [
        ("131329", "MDC_ECG_ELEC_POTL_I", "I"),
        ("0", "MDC_ECG_LEAD_AVR", "aVR"),
        ("I", "I", "I"),
        ("3", "Lead III", "III"),
        ("LEAD_V1", "Lead V1", "V1"),
        ("ECG_LEAD_AVF", "", "aVF"),
        ("0", "MDC_ECG_LEAD_V4R", None),  # an extra lead, not one of the 12
        ("PDF", "ECG Report", None),
    ],
)
def test_leads_are_named_by_mdc_code_or_by_any_plain_spelling(code, text, lead):
    assert lead_of(code, text) == lead


def test_rate_and_resolution_are_recognised_in_vendor_spellings():
    assert attribute_of("0", "MDC_ATTR_SAMP_RATE") == attribute_of("SR", "Sampling Frequency") == "MDC_ATTR_SAMP_RATE"
    assert attribute_of("RESOLUTION", "") == attribute_of("x", "Amplitude resolution") == "MDC_ATTR_NU_MSMT_RES"
    assert attribute_of("ACQ_DEVICE", "Acquisition Device") is None


@pytest.mark.parametrize("unit", ["uV", "µV", "μV", "266419", "MDC_DIM_MICRO_VOLT", "microvolt"])
def test_microvolt_spellings(unit):
    assert millivolts_per_unit((unit,)) == 1e-3

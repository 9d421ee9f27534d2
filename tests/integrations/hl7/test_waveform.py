"""The NA fast path: elide/splice OBX-5, decode numeric arrays with numpy."""

from __future__ import annotations

import numpy as np
import pytest

from integrations.hl7.waveform import decode_numeric_array, elide_waveforms, encode_numeric_array, splice_waveforms

MESSAGE = "\r".join(
    [
        "MSH|^~\\&|A|B|C|D|20260101||ORU^R01^ORU_R01|M1|P|2.5.1",
        "OBX|1|NM|0^MDC_ATTR_SAMP_RATE^MDC|1|500|Hz",
        "OBX|2|NA|131329^MDC_ECG_ELEC_POTL_I^MDC|1.1|1^-2^3|uV|||||F",
        "OBX|3|NA|131330^MDC_ECG_ELEC_POTL_II^MDC|1.2|4^5",
    ]
)


def test_elide_cuts_only_na_values_and_splice_puts_them_back():
    elided = elide_waveforms(MESSAGE)
    assert elided.payloads == {2: "1^-2^3", 3: "4^5"}
    assert "OBX|2|NA|131329^MDC_ECG_ELEC_POTL_I^MDC|1.1||uV|||||F" in elided.text
    assert "|500|" in elided.text
    assert splice_waveforms(elided.text, elided.payloads) == MESSAGE


def test_line_feeds_between_segments_are_tolerated():
    assert elide_waveforms(MESSAGE.replace("\r", "\r\n")).payloads == {2: "1^-2^3", 3: "4^5"}


@pytest.mark.parametrize(
    ("payload", "samples"),
    [
        pytest.param("1^-2^+3", [1.0, -2.0, 3.0], id="whole counts"),
        pytest.param("0.5^-.25^3.", [0.5, -0.25, 3.0], id="decimals"),
        pytest.param("1^^3^", [1.0, np.nan, 3.0, np.nan], id="empty components are missing samples"),
        pytest.param("", [], id="an empty value has no samples"),
    ],
)
def test_decode_numeric_array(payload, samples):
    np.testing.assert_array_equal(decode_numeric_array(payload), samples)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param("1^2^x3", "non-numeric character 'x' in component 3", id="letters"),
        pytest.param("1^NaN", "non-numeric character 'N' in component 2", id="NaN"),
        pytest.param("1e3", "non-numeric character 'e' in component 1", id="exponent"),
        pytest.param("1^2-3", "malformed number", id="not a number"),
    ],
)
def test_decode_numeric_array_refuses_what_nm_does_not_allow(payload, reason):
    with pytest.raises(ValueError, match=reason):
        decode_numeric_array(payload)


def test_encode_numeric_array_writes_whole_counts_and_gaps():
    assert encode_numeric_array(np.array([1.0, -2.0, np.nan, 30.0])) == "1^-2^^30"

"""ECG ORU^R01: what we write is what we read, other senders' layouts, and what each stage refuses."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hl7apy.parser import parse_message

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.hl7 import (
    EcgWaveformError,
    Hl7MessageError,
    Hl7ParseError,
    Hl7StructureError,
    Hl7TimeError,
    UnsupportedMessageError,
    decode_ecg_oru,
    encode_ecg_oru,
    scan_ecg_oru,
)
from integrations.hl7.mdc import LEAD_CODES

LEAD_BY_CODE = {code: lead for lead, code in LEAD_CODES.items()}


def test_encode_then_decode_gives_back_the_record(ecg):
    decoded = decode_ecg_oru(encode_ecg_oru(ecg, control_id="MSG-1"))
    np.testing.assert_allclose(decoded.signal_mv, ecg.signal_mv, atol=1e-9)
    assert decoded.lead_names == ecg.lead_names
    assert decoded.fs_hz == ecg.fs_hz
    assert (decoded.record_id, decoded.subject_id, decoded.source_version) == ("ECG-1", "PAT-1", "MSG-1")
    assert decoded.acquired_at == ecg.acquired_at
    assert decoded.source == "hl7v2"


def test_missing_samples_travel_as_empty_components(ecg):
    signal_mv = ecg.signal_mv.copy()
    signal_mv[4, [0, 17, 49]] = np.nan
    with_gaps = EcgRecord("ECG-2", signal_mv, ecg.fs_hz, ecg.lead_names, subject_id="PAT-1")
    decoded = decode_ecg_oru(encode_ecg_oru(with_gaps, control_id="MSG-2"))
    np.testing.assert_allclose(decoded.signal_mv, signal_mv, atol=1e-9)


def test_the_resolution_scales_counts_to_millivolts(ecg):
    raw = encode_ecg_oru(ecg, control_id="MSG-1", resolution_uv=5.0)
    assert b"MDC_ATTR_NU_MSMT_RES^MDC|1|5|266419^MDC_DIM_MICRO_VOLT^MDC" in raw
    decoded = decode_ecg_oru(raw)
    np.testing.assert_allclose(decoded.signal_mv, np.round(ecg.signal_mv / 0.005) * 0.005, atol=1e-9)


def test_the_fast_path_gives_the_same_samples_as_a_full_hl7apy_parse(oru_bytes):
    """hl7apy parses every NA component into an object (seconds for a real ECG); on 12 × 50 it is affordable."""
    raw = oru_bytes("MSG-1", n_samples=50)
    message = parse_message(raw.decode(), find_groups=True)
    observations = message.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation
    resolution_mv = 1e-3  # the encoder's default: 1 µV per count
    by_hl7apy = {
        LEAD_BY_CODE[obs.obx.obx_3.to_er7().split("^")[0]]: [
            float(c.to_er7()) * resolution_mv for c in obs.obx.obx_5.children
        ]
        for obs in observations
        if obs.obx.obx_2.to_er7() == "NA"
    }
    record = decode_ecg_oru(raw)
    assert set(by_hl7apy) == set(record.lead_names)
    for row, lead in enumerate(record.lead_names):
        np.testing.assert_allclose(record.signal_mv[row], by_hl7apy[lead], atol=1e-12)


def _ihe_style_message() -> bytes:
    """A gateway's layout: each lead carries its own rate and resolution as children of its OBX-4, values in mV."""
    segments = [
        "MSH|^~\\&|GATEWAY|ICU|AGENT|HOSP|20260102030405||ORU^R01^ORU_R01|GW-1|P|2.5.1",
        "PID|||MRN-9^^^HOSP^MR~ALT-1||DOE^JANE",
        "OBR|1|PLACER-7||11524-6^EKG study^LN|||20260102030000.123-0500",
    ]
    for index, lead in enumerate(MODEL_LEAD_ORDER, start=1):
        lead_sub_id = f"1.1.1.{1000 + index}"
        mnemonic = f"MDC_ECG_LEAD_{lead.upper()}"
        segments += [
            f"OBX|{3 * index - 2}|NA|{LEAD_CODES[lead]}^{mnemonic}^MDC|{lead_sub_id}|0.5^-0.25^{index / 10}|mV|||||F",
            f"OBX|{3 * index - 1}|NM|0^MDC_ATTR_SAMP_RATE^MDC|{lead_sub_id}.1|250.0|264608^MDC_DIM_PER_SEC^MDC|||||F",
            f"OBX|{3 * index}|NM|0^MDC_ATTR_NU_MSMT_RES^MDC|{lead_sub_id}.2|1|262656^MDC_DIM_DIMLESS^MDC|||||F",
        ]
    return "\r".join(segments).encode()


def test_attributes_may_hang_under_each_lead_with_units_on_the_lead():
    record = decode_ecg_oru(_ihe_style_message())
    assert record.fs_hz == 250.0
    assert record.lead_names == MODEL_LEAD_ORDER
    np.testing.assert_allclose(record.signal_mv[2], [0.5, -0.25, 0.3])
    # OBR-3 is empty: the id falls back to OBR-2; PID-3's first repetition names the patient.
    assert (record.record_id, record.subject_id) == ("PLACER-7", "MRN-9")
    assert record.acquired_at == dt.datetime(2026, 1, 2, 3, 0, 0, 123000, tzinfo=dt.timezone(dt.timedelta(hours=-5)))


@pytest.mark.parametrize(
    ("edit", "error", "reason"),
    [
        pytest.param(lambda raw: b"MSH|", Hl7ParseError, "MSH is too short", id="truncated header"),
        pytest.param(lambda raw: raw.replace(b"|MSG-1|", b"||", 1), Hl7ParseError, "MSH-10", id="no control id"),
        pytest.param(
            lambda raw: raw.replace(b"|2.5.1\r", b"|2.1\r", 1), UnsupportedMessageError, "2.1", id="old version"
        ),
        pytest.param(
            lambda raw: raw.replace(b"MDC_ATTR_NU_MSMT_RES", b"MDC_ATTR_OTHER"),
            EcgWaveformError,
            "no MDC_ATTR_NU_MSMT_RES OBX for lead",
            id="no resolution",
        ),
        pytest.param(
            lambda raw: raw.replace(b"264608^MDC_DIM_PER_SEC^MDC", b"ms"),
            EcgWaveformError,
            "sample rate unit 'ms' is not Hz",
            id="rate not in Hz",
        ),
        pytest.param(
            lambda raw: re.sub(rb"(\|NA\|[^|]*\|[^|]*\|)[^|\r]*", rb"\1", raw),  # every NA OBX-5 emptied
            EcgWaveformError,
            "the leads have no samples",
            id="empty leads",
        ),
        pytest.param(
            lambda raw: raw.replace(b"MDC_ECG_ELEC_POTL_III^MDC|1.3", b"MDC_ECG_ELEC_POTL_II^MDC|1.3").replace(
                b"131389^", b"131330^"
            ),
            EcgWaveformError,
            "lead(s) II sent twice",
            id="duplicate lead",
        ),
    ],
)
def test_the_scan_refuses_at_receipt(oru_bytes, edit, error, reason):
    with pytest.raises(error) as info:
        scan_ecg_oru(edit(oru_bytes("MSG-1")))
    assert reason in str(info.value)


def _malformed_first_sample(raw: bytes) -> bytes:
    before, lead_i, after = raw.partition(b"|1.1|")
    return before + lead_i + b"1-2" + after[after.index(b"^") :]


@pytest.mark.parametrize(
    ("edit", "error", "reason"),
    [
        pytest.param(_malformed_first_sample, EcgWaveformError, "lead I NA values: malformed number", id="1-2"),
        pytest.param(
            lambda raw: raw.replace(b"|11524-6^EKG study^LN|", b"||", 1),
            Hl7StructureError,
            "invalid ORU^R01 structure",
            id="no OBR-4",
        ),
        pytest.param(
            lambda raw: raw.replace(b"|20260102030405+0000", b"|20261302030405+0000", 1),
            Hl7TimeError,
            "OBR-7 '20261302030405+0000': month must be in 1..12",
            id="month 13 in OBR-7",
        ),
    ],
)
def test_what_only_the_full_decode_checks_passes_the_scan(oru_bytes, edit, error, reason):
    """Number syntax of each sample and hl7apy's structure checks are decode-time (too slow for the ACK path)."""
    raw = edit(oru_bytes("MSG-1"))
    scan_ecg_oru(raw)
    with pytest.raises(error) as info:
        decode_ecg_oru(raw)
    assert "'MSG-1'" in str(info.value)
    assert reason in str(info.value)


def test_a_real_size_ecg_scans_and_decodes(oru_bytes):
    raw = oru_bytes("MSG-1", n_samples=5000)
    layout = scan_ecg_oru(raw)
    assert (layout.fs_hz, layout.n_samples, len(layout.leads)) == (500.0, 5000, 12)
    assert decode_ecg_oru(raw).signal_mv.shape == (12, 5000)


def test_an_obr_7_without_offset_is_local_time_of_the_site_zone(oru_bytes):
    raw = oru_bytes("MSG-1").replace(b"|20260102030405+0000", b"|20260102030405", 1)

    record = decode_ecg_oru(raw, site_tz=ZoneInfo("America/New_York"))

    assert record.acquired_at == dt.datetime(2026, 1, 2, 8, 4, 5, tzinfo=dt.UTC)
    assert record.acquired_at_text == "20260102030405"
    assert decode_ecg_oru(raw).acquired_at == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)  # default zone: UTC


def test_an_empty_obr_7_leaves_the_time_unknown(oru_bytes):
    record = decode_ecg_oru(oru_bytes("MSG-1").replace(b"|20260102030405+0000", b"|", 1))

    assert record.acquired_at is None and record.acquired_at_text is None


@pytest.mark.parametrize(
    ("edit", "prefix"),
    [
        pytest.param(lambda raw: b"garbage", "malformed", id="not HL7"),
        pytest.param(lambda raw: raw.replace(b"|2.5.1\r", b"|2.3\r", 1), "unsupported", id="v2.3"),
        pytest.param(lambda raw: re.sub(rb"OBX\|14\|[^\r]*\r?", b"", raw), "missing-leads", id="no V6"),
        pytest.param(lambda raw: raw.replace(b"|20260102030405+0000", b"|2026-01-02", 1), "invalid-time", id="ISO"),
    ],
)
def test_each_refusal_names_its_quarantine_reason(oru_bytes, edit, prefix):
    with pytest.raises(Hl7MessageError) as refused:
        decode_ecg_oru(edit(oru_bytes("MSG-1")))
    assert refused.value.reject_reason == prefix
    assert refused.value.quarantine_reason.startswith(f"{prefix}: ")

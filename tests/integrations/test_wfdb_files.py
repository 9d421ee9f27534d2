"""WFDB files: what we write, wfdb reads; what wfdb writes, we read; broken files are named."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import wfdb

from integrations.ecg import MIMIC_FILE_LEAD_ORDER, MODEL_LEAD_ORDER, EcgRecord
from integrations.errors import EcgReadError
from integrations.wfdb_files import read_wfdb, write_wfdb


@pytest.fixture
def record() -> EcgRecord:
    signal = np.random.default_rng(0).normal(0.0, 0.5, size=(12, 5000))
    signal[MODEL_LEAD_ORDER.index("aVL"), 100:120] = np.nan
    return EcgRecord("40689238", signal, 500.0, MODEL_LEAD_ORDER, acquired_at=datetime(2180, 7, 23, 8, 44))


def test_round_trip_keeps_millivolts_leads_rate_time_and_gaps(tmp_path, record):
    path = write_wfdb(record, tmp_path / "s40689238", "40689238")
    back = read_wfdb(path, subject_id="10000032")
    order = [MODEL_LEAD_ORDER.index(lead) for lead in back.lead_names]
    np.testing.assert_allclose(back.signal_mv, record.signal_mv[order], atol=0.5 / 200 + 1e-9)
    assert set(back.lead_names) == set(MODEL_LEAD_ORDER)
    assert back.fs_hz == 500.0 and back.acquired_at == record.acquired_at.replace(tzinfo=UTC)
    assert back.acquired_at_text == "08:44:00 23/07/2180"
    assert back.record_id == "40689238" and back.subject_id == "10000032"
    assert np.isnan(back.signal_mv[back.lead_names.index("aVL"), 100:120]).all()


def test_the_base_time_is_local_time_of_the_site_zone(tmp_path, record):
    path = write_wfdb(record, tmp_path / "s40689238", "40689238")
    back = read_wfdb(path, site_tz=ZoneInfo("America/New_York"))
    assert back.acquired_at == datetime(2180, 7, 23, 12, 44, tzinfo=UTC)  # EDT, UTC-4


def test_a_base_time_without_a_date_cannot_be_placed_but_its_text_is_kept(tmp_path, record):
    path = write_wfdb(record, tmp_path / "s1", "r1")
    header = path.with_suffix(".hea")
    header.write_text(header.read_text().replace(" 08:44:00 23/07/2180", " 08:44:00", 1))
    back = read_wfdb(path)
    assert back.acquired_at is None and back.acquired_at_text == "08:44:00"


def test_files_are_in_mimic_lead_order_at_200_adu_per_mv(tmp_path, record):
    path = write_wfdb(record, tmp_path, "r")
    header = wfdb.rdheader(str(path))
    assert tuple(header.sig_name) == MIMIC_FILE_LEAD_ORDER
    assert header.fmt == ["16"] * 12 and header.adc_gain == [200.0] * 12
    assert header.sig_len == 5000 and header.fs == 500


def test_reads_a_record_written_by_wfdb_itself(tmp_path):
    signal = np.random.default_rng(1).normal(0.0, 0.3, size=(5000, 12))
    wfdb.wrsamp("ref", fs=500, units=["mV"] * 12, sig_name=list(MIMIC_FILE_LEAD_ORDER), p_signal=signal,
                fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))  # fmt: skip
    back = read_wfdb(tmp_path / "ref")
    np.testing.assert_allclose(back.signal_mv, signal.T, atol=0.5 / 200 + 1e-9)


def test_microvolt_records_are_converted_to_millivolts(tmp_path):
    signal = np.full((1000, 12), 500.0)  # 500 µV
    wfdb.wrsamp("uv", fs=250, units=["uV"] * 12, sig_name=list(MIMIC_FILE_LEAD_ORDER), p_signal=signal,
                fmt=["16"] * 12, adc_gain=[1.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))  # fmt: skip
    np.testing.assert_allclose(read_wfdb(tmp_path / "uv").signal_mv, 0.5)


def test_missing_header_is_named(tmp_path):
    with pytest.raises(EcgReadError, match=r"nothing\.hea: file not found"):
        read_wfdb(tmp_path / "nothing")


def test_missing_data_file_is_named(tmp_path, record):
    path = write_wfdb(record, tmp_path, "r")
    path.with_suffix(".dat").unlink()
    with pytest.raises(EcgReadError, match=r"file not found: r\.dat"):
        read_wfdb(path)


def test_truncated_data_file_is_named(tmp_path, record):
    path = write_wfdb(record, tmp_path, "r")
    with path.with_suffix(".dat").open("r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(EcgReadError, match="corrupt or truncated") as caught:
        read_wfdb(path)
    assert caught.value.path.endswith("r")


def test_corrupt_header_is_named(tmp_path):
    (tmp_path / "bad.hea").write_text("this is not a header\n\x00\x01\n")
    with pytest.raises(EcgReadError, match="bad: corrupt or truncated WFDB record"):
        read_wfdb(tmp_path / "bad")


def test_no_temporary_files_are_left_behind(tmp_path, record):
    write_wfdb(record, tmp_path, "r")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.dat", "r.hea"]

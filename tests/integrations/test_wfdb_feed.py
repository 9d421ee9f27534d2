"""The WFDB folder feed: every complete record once, half-written ones later, corrupt ones quarantined once."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import wfdb

from integrations import wfdb_feed
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.store import QuarantineState, Store, StudyStatus
from integrations.wfdb_feed import QUARANTINE_KIND, NewRecord, RejectedRecord, headers_in_path_order, scan
from integrations.wfdb_files import write_wfdb

SETTLE_S = 60.0
MIMIC_RECORD = "files/p1000/p10000032/s40689238/40689238"


class Clock:
    """Scan time and file change times, both far enough ahead of the real clock that the files' ctimes never count."""

    def __init__(self) -> None:
        self.now_s = time.time() + 100_000

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    store.upgrade()
    yield store
    store.dispose()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "incoming"
    path.mkdir()
    return path


def _ecg(seed: int = 0) -> EcgRecord:
    signal = np.random.default_rng(seed).normal(0.0, 0.3, size=(12, 500))
    return EcgRecord("r", signal, 500.0, MODEL_LEAD_ORDER, acquired_at=datetime(2180, 7, 23, 8, 44))


def _write(folder: Path, relative: str, clock: Clock, *, seed: int = 0, age_s: float = 2 * SETTLE_S) -> Path:
    """Write a record that last changed ``age_s`` before the clock's now; returns its path without extension."""
    relative_path = Path(relative)
    base = write_wfdb(_ecg(seed), folder / relative_path.parent, relative_path.name)
    _set_changed(base, clock.now_s - age_s)
    return base


def _set_changed(base: Path, changed_s: float) -> None:
    for path in base.parent.glob(base.name + ".*"):
        os.utime(path, (changed_s, changed_s))


def _scan(folder: Path, store: Store, clock: Clock, **options) -> list[NewRecord | RejectedRecord]:
    return list(scan(folder, store, settle_s=SETTLE_S, now_s=clock, **options))


def test_a_complete_record_is_handed_out_as_a_canonical_record_and_remembered(folder, store, clock):
    _write(folder, MIMIC_RECORD, clock)
    [item] = _scan(folder, store, clock, device_timezone=timezone(timedelta(hours=-5)))
    assert isinstance(item, NewRecord)
    record = item.record
    assert record.record_id == MIMIC_RECORD and record.source == "wfdb" and record.subject_id == "10000032"
    assert set(record.lead_names) == set(MODEL_LEAD_ORDER) and record.fs_hz == 500.0
    assert record.acquired_at == datetime(2180, 7, 23, 13, 44, tzinfo=UTC)
    assert len(record.source_version) == 64  # sha256 of the files
    study = store.get_study("wfdb", MIMIC_RECORD, record.source_version)
    assert study.id == item.study_id and study.status == StudyStatus.NEW
    assert study.study.patient_ref == "10000032" and study.study.leads == record.lead_names


def test_records_are_found_in_subfolders_and_handed_out_in_path_order(folder, store, clock):
    for relative in ("b/2", "a/deeper/1", "c"):
        _write(folder, relative, clock)
    assert [item.record.record_id for item in _scan(folder, store, clock)] == ["a/deeper/1", "b/2", "c"]


def test_the_walk_gives_the_order_of_sorted_rglob_for_names_that_sort_across_levels(folder):
    for relative in ("a-b", "a/z", "a/b/c", "a.hea.d/x", "B", "é/1", ".hidden/2", "a0"):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / f"{relative}.hea").write_text("")
    (folder / "a" / "notes.txt").write_text("")
    (folder / "linked").symlink_to(folder / "a", target_is_directory=True)  # rglob does not follow it either

    assert list(headers_in_path_order(folder)) == sorted(folder.rglob("*.hea"))
    assert list(headers_in_path_order(folder / "absent")) == []


def test_a_scan_lists_a_folder_only_when_it_reaches_it(folder, store, clock, monkeypatch):
    """A night of many records is walked, not listed whole before the first record is handed out."""
    for index in range(6):
        _write(folder, f"p{index}/s{index}/{index}", clock)
    listed: list[str] = []
    scandir = os.scandir

    def recording_scandir(path):
        listed.append(Path(path).relative_to(folder).as_posix())
        return scandir(path)

    monkeypatch.setattr(wfdb_feed.os, "scandir", recording_scandir)
    items = scan(folder, store, settle_s=SETTLE_S, now_s=clock)

    first = next(items)

    assert first.record.record_id == "p0/s0/0"
    assert listed == [".", "p0", "p0/s0"]
    assert len(list(items)) == 5 and len(listed) == 1 + 2 * 6


def _mark_scored(store: Store, items: list[NewRecord | RejectedRecord]) -> None:
    """What the agent does once a batch's results are committed."""
    for item in items:
        store.set_study_status(item.study_id, StudyStatus.SCORED)


def _record_ids(items: list[NewRecord | RejectedRecord]) -> list[str]:
    return [item.record.record_id for item in items]


def test_a_second_scan_of_an_unchanged_folder_hands_out_nothing_once_the_first_was_scored(folder, store, clock):
    _write(folder, "r1", clock)
    _mark_scored(store, _scan(folder, store, clock))
    clock.advance(3600)
    assert _scan(folder, store, clock) == []


def test_a_scored_record_is_not_handed_out_again_when_its_files_are_touched(folder, store, clock):
    base = _write(folder, "r1", clock)
    [item] = _scan(folder, store, clock)
    store.set_study_status(item.study_id, StudyStatus.SCORED)
    clock.advance(3600)
    _set_changed(base, clock.now_s - 2 * SETTLE_S)  # same content, new times
    assert _scan(folder, store, clock) == []


def test_a_rewritten_record_is_a_new_version_and_handed_out_again(folder, store, clock):
    _write(folder, "r1", clock, seed=0)
    [first] = _scan(folder, store, clock)
    clock.advance(3600)
    _write(folder, "r1", clock, seed=1)
    [second] = _scan(folder, store, clock)
    assert second.record.record_id == "r1" and second.record.source_version != first.record.source_version
    assert second.study_id != first.study_id


def test_records_handed_out_but_not_scored_are_handed_out_again_after_an_interrupted_scan(folder, store, clock):
    _write(folder, "r1", clock)
    _write(folder, "r2", clock)
    interrupted = scan(folder, store, settle_s=SETTLE_S, now_s=clock)
    next(interrupted)  # the agent died while scoring r1
    interrupted.close()
    assert [item.record.record_id for item in _scan(folder, store, clock)] == ["r1", "r2"]


def test_records_handed_out_but_never_scored_are_handed_out_again_though_the_watermark_passed_them(
    folder, store, clock
):
    _write(folder, "r1", clock)
    _write(folder, "r2", clock)
    first = _scan(folder, store, clock)  # consumed to the end: the watermark moves past r1 and r2
    assert store.get_watermark("wfdb-feed:wfdb") is not None
    clock.advance(3600)  # ... and the run died before committing their results
    again = _scan(folder, store, clock)
    assert _record_ids(again) == ["r1", "r2"]
    assert [item.study_id for item in again] == [item.study_id for item in first]
    _mark_scored(store, again)
    clock.advance(3600)
    assert _scan(folder, store, clock) == []


def test_a_consumer_that_dies_after_taking_the_last_batch_gets_that_batch_again(folder, store, clock):
    for name in ("r1", "r2", "r3"):
        _write(folder, name, clock)
    items = scan(folder, store, settle_s=SETTLE_S, now_s=clock)
    _mark_scored(store, list(islice(items, 2)))  # first batch committed
    assert _record_ids(list(islice(items, 2))) == ["r3"]  # the scan is exhausted, then the process dies
    clock.advance(3600)
    assert _record_ids(_scan(folder, store, clock)) == ["r3"]


def test_an_unscored_record_is_handed_out_again_before_the_new_ones(folder, store, clock):
    _write(folder, "b", clock)
    _scan(folder, store, clock)
    clock.advance(3600)
    _write(folder, "a", clock)
    assert _record_ids(_scan(folder, store, clock)) == ["b", "a"]


def test_an_unscored_record_whose_files_are_gone_is_not_handed_out_again(folder, store, clock):
    base = _write(folder, "r1", clock)
    _scan(folder, store, clock)
    for path in base.parent.glob("r1.*"):
        path.unlink()
    clock.advance(3600)
    assert _scan(folder, store, clock) == []
    assert store.list_quarantine() == []


def test_a_record_that_changed_within_the_settle_time_is_left_for_a_later_scan(folder, store, clock):
    _write(folder, "r1", clock, age_s=SETTLE_S / 2)
    assert _scan(folder, store, clock) == []
    clock.advance(SETTLE_S)
    assert [item.record.record_id for item in _scan(folder, store, clock)] == ["r1"]


def test_a_header_whose_data_file_has_not_arrived_waits_without_quarantine(folder, store, clock):
    base = _write(folder, "r1", clock)
    data = base.with_suffix(".dat").read_bytes()
    base.with_suffix(".dat").unlink()
    assert _scan(folder, store, clock) == []
    clock.advance(3600)
    assert _scan(folder, store, clock) == []
    base.with_suffix(".dat").write_bytes(data)  # arrives after that scan, and settles
    arrived_s = clock.now_s + 1
    os.utime(base.with_suffix(".dat"), (arrived_s, arrived_s))
    clock.advance(2 * SETTLE_S)
    assert [item.record.record_id for item in _scan(folder, store, clock)] == ["r1"]
    assert store.list_quarantine() == []


def test_a_data_file_still_being_written_waits_and_is_quarantined_only_if_it_stays_short(folder, store, clock):
    base = _write(folder, "r1", clock)
    data_path = base.with_suffix(".dat")
    data_path.write_bytes(data_path.read_bytes()[:1000])
    _set_changed(base, clock.now_s - 1)
    assert _scan(folder, store, clock) == []
    clock.advance(SETTLE_S)
    [item] = _scan(folder, store, clock)
    assert isinstance(item, RejectedRecord)
    assert (
        item.record_id == "r1" and item.reason == "malformed: data file r1.dat has 1000 bytes, the header expects 12000"
    )


def test_a_garbage_header_is_quarantined_with_its_origin_path_and_reason(folder, store, clock):
    header = folder / "broken" / "x.hea"
    header.parent.mkdir()
    header.write_bytes(b"\x00\xffnot a header at all\n")
    _set_changed(header.with_suffix(""), clock.now_s - 2 * SETTLE_S)
    [item] = _scan(folder, store, clock)
    assert isinstance(item, RejectedRecord) and item.reason.startswith("malformed: unreadable WFDB header")
    [entry] = store.list_quarantine(kind=QUARANTINE_KIND)
    assert entry.id == item.quarantine_id and entry.state == QuarantineState.OPEN
    assert entry.entry.origin == str(folder) and entry.entry.raw_ref == str(folder / "broken" / "x")
    assert entry.entry.reason == item.reason


def test_a_header_still_being_written_is_not_quarantined(folder, store, clock):
    base = _write(folder, "r1", clock)
    header = base.with_suffix(".hea")
    header.write_text(header.read_text().splitlines()[0] + "\n")  # only the record line so far
    _set_changed(base, clock.now_s - 1)
    assert _scan(folder, store, clock) == []
    assert store.list_quarantine() == []


def test_a_corrupt_record_met_again_after_an_interrupted_scan_is_quarantined_once(folder, store, clock):
    (folder / "x.hea").write_text("x 12 500 5000\n")
    _set_changed(folder / "x", clock.now_s - 2 * SETTLE_S)
    _write(folder, "y", clock)
    interrupted = scan(folder, store, settle_s=SETTLE_S, now_s=clock)
    first = next(interrupted)
    interrupted.close()
    [again, _] = _scan(folder, store, clock)
    assert again.quarantine_id == first.quarantine_id
    assert len(store.list_quarantine()) == 1
    assert again.reason == "malformed: header declares 12 signals but describes 0"


def test_an_examined_record_whose_data_file_is_later_deleted_is_not_rescanned(folder, store, clock, caplog):
    base = _write(folder, "r1", clock)
    _mark_scored(store, _scan(folder, store, clock))
    base.with_suffix(".dat").unlink()  # archived elsewhere
    clock.advance(3600)
    with caplog.at_level("INFO", logger="integrations.wfdb_feed"):
        assert _scan(folder, store, clock) == []
    assert "r1" not in caplog.text


def test_lead_labels_of_other_writers_are_mapped_to_the_canonical_names(folder, store, clock):
    labels = ["LEAD_I", "lead_ii", "III", "AVR", "MDC_ECG_LEAD_AVL", "avf", "V1", "V2", "V3", "V4", "V5", "V6"]
    signal = np.random.default_rng(2).normal(0.0, 0.3, size=(1000, 12))
    wfdb.wrsamp("other", fs=250, units=["mV"] * 12, sig_name=labels, p_signal=signal, fmt=["16"] * 12,
                adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(folder))  # fmt: skip
    _set_changed(folder / "other", clock.now_s - 2 * SETTLE_S)
    [item] = _scan(folder, store, clock)
    assert item.record.lead_names == MODEL_LEAD_ORDER and item.record.fs_hz == 250.0


def test_a_settled_record_the_reader_refuses_is_quarantined_with_the_readers_reason(folder, store, clock):
    base = _write(folder, "r1", clock)
    header = base.with_suffix(".hea")
    header.write_text(header.read_text().replace("/mV", "/furlong"))
    _set_changed(base, clock.now_s - 2 * SETTLE_S)
    [item] = _scan(folder, store, clock)
    assert isinstance(item, RejectedRecord) and item.reason == "malformed: unknown signal unit 'furlong'"

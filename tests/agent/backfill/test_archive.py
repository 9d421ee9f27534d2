"""An archive as partitions, and each partition's files as the items a run takes, with the keys the nightly
sources give the same ECGs (so a backfill and a nightly run of one ECG are one study)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC

from agent.backfill.archive import (
    HL7_KIND,
    NDJSON_KIND,
    WFDB_KIND,
    ArchiveRoots,
    ReadOptions,
    list_partitions,
    read_partition,
    split_hl7_file,
)
from agent.sources import PulledEcg, RejectedItem
from agent.sources.hl7_inbox import Hl7InboxSource
from agent.sources.wfdb_folder import WfdbFolderSource
from integrations.fhir.pull import EcgPullConfig
from integrations.hl7.ecg_oru_encoder import encode_ecg_oru
from integrations.hl7.message import read_header
from integrations.hl7.mllp import frame
from integrations.store import InboxMessage

from .conftest import CORPUS, synthetic_record, write_wfdb_tree

OPTIONS = ReadOptions(site_tz=UTC, fhir=EcgPullConfig())


def _items(roots: ArchiveRoots, *, files_per_partition: int = 2, ndjson_range_bytes: int = 1 << 20) -> list:
    skipped: Counter[str] = Counter()
    partitions = list_partitions(roots, files_per_partition=files_per_partition, ndjson_range_bytes=ndjson_range_bytes)
    return [item for partition in partitions for item in read_partition(partition, OPTIONS, skipped)]


def test_a_wfdb_tree_is_listed_recursively_in_partitions_of_n_records_with_stable_keys(tmp_path):
    roots = ArchiveRoots(wfdb=write_wfdb_tree(tmp_path / "wfdb", 5))
    partitions = list_partitions(roots, files_per_partition=2, ndjson_range_bytes=1024)
    assert [(p.kind, len(p.pieces)) for p in partitions] == [(WFDB_KIND, 2), (WFDB_KIND, 2), (WFDB_KIND, 1)]
    again = list_partitions(roots, files_per_partition=2, ndjson_range_bytes=1024)
    assert [p.key for p in again] == [p.key for p in partitions] and len({p.key for p in partitions}) == 3


def _key(item: PulledEcg) -> tuple[str, str, str]:
    return item.study.source, item.study.source_id, item.study.source_version


def test_a_wfdb_record_gets_the_study_key_the_nightly_folder_feed_gives_it(tmp_path, store):
    folder = write_wfdb_tree(tmp_path / "wfdb", 2)
    backfilled = {
        (i.study.source, i.study.source_id, i.study.source_version) for i in _items(ArchiveRoots(wfdb=folder))
    }
    nightly = WfdbFolderSource(folder, store, settle_s=0).pull()
    assert backfilled == {(i.study.source, i.study.source_id, i.study.source_version) for i in nightly}
    assert len(backfilled) == 2


def test_ndjson_files_are_cut_in_line_aligned_ranges_that_hand_out_every_line_once(tmp_path):
    folder = tmp_path / "bulk"
    folder.mkdir()
    names = ("fhir-instant", "fhir-period", "fhir-date-only", "fhir-mdc-offset", "fhir-missing-v6")
    observations = [json.loads((CORPUS / "fhir" / f"{name}.json").read_text()) for name in names]
    (folder / "Observation.ndjson").write_text("".join(json.dumps(o) + "\n" for o in observations))
    size = (folder / "Observation.ndjson").stat().st_size

    partitions = list_partitions(ArchiveRoots(fhir_ndjson=folder), files_per_partition=1, ndjson_range_bytes=size // 4)
    items = _items(ArchiveRoots(fhir_ndjson=folder), files_per_partition=1, ndjson_range_bytes=size // 4)

    assert len(partitions) > 1 and {p.kind for p in partitions} == {NDJSON_KIND}
    ranges = [(p.pieces[0].start, p.pieces[0].end) for p in partitions]
    assert ranges[0][0] == 0 and ranges[-1][1] is None
    assert all(end == next_start for (_, end), (next_start, _) in itertools.pairwise(ranges))
    assert [i.study.source_id if isinstance(i, PulledEcg) else i.entry.raw_ref for i in items] == [
        "fhir-instant", "fhir-period", "fhir-date-only", "fhir-mdc-offset", "Observation/fhir-missing-v6/_history/1"
    ]  # fmt: skip
    assert isinstance(items[-1], RejectedItem) and items[-1].entry.reason.startswith("missing-leads")


def test_resources_that_are_not_ecg_observations_are_skipped_and_counted_not_quarantined(tmp_path):
    folder = tmp_path / "bulk"
    folder.mkdir()
    ecg = json.loads((CORPUS / "fhir" / "fhir-instant.json").read_text())
    potassium = {"resourceType": "Observation", "id": "k", "code": {"coding": [{"system": "http://loinc.org",
                 "code": "2823-3"}]}}  # fmt: skip
    (folder / "Observation.ndjson").write_text("\n".join(json.dumps(r) for r in (potassium, ecg, {"resourceType":
                                               "Patient"})) + "\n\n")  # fmt: skip
    skipped: Counter[str] = Counter()
    (partition,) = list_partitions(ArchiveRoots(fhir_ndjson=folder), files_per_partition=4, ndjson_range_bytes=1 << 20)
    items = list(read_partition(partition, OPTIONS, skipped))
    assert [type(i).__name__ for i in items] == ["PulledEcg"] and skipped == Counter(not_ecg=2)


def test_an_mllp_batch_file_is_split_into_its_messages_and_an_unframed_file_is_one_message():
    one, two = (encode_ecg_oru(synthetic_record(f"r{i}", i), control_id=f"C{i}") for i in (1, 2))
    batch = frame(one) + b"\r\n" + frame(two) + b"\n"
    assert split_hl7_file(batch) == [one, two]
    assert split_hl7_file(one) == [one]
    assert split_hl7_file(frame(one) + b"\x0bMSH|^~\\&|cut") == [one, b"MSH|^~\\&|cut"]


def test_an_hl7_dump_message_gets_the_study_key_of_the_same_message_in_the_inbox(tmp_path, store):
    raw = encode_ecg_oru(synthetic_record("r1", 1), control_id="MSG-1")
    dump = tmp_path / "hl7"
    dump.mkdir()
    (dump / "batch.mllp").write_bytes(frame(raw) + frame(b"not hl7 at all"))
    header = read_header(raw)
    store.add_inbox_message(InboxMessage("mllp", header.sender.application, header.sender.facility,
                                         header.control_id, header.message_type, raw))  # fmt: skip

    backfilled = _items(ArchiveRoots(hl7=dump))
    (inbox,) = list(Hl7InboxSource(store).pull())

    assert backfilled[0].study == inbox.study and backfilled[0].patient_identifier == inbox.patient_identifier
    assert isinstance(backfilled[1], RejectedItem) and backfilled[1].entry.raw_ref == f"{dump / 'batch.mllp'}#2"
    assert backfilled[1].entry.reason.startswith("malformed: not an HL7 v2 message")
    assert {p.kind for p in list_partitions(ArchiveRoots(hl7=dump), files_per_partition=1, ndjson_range_bytes=1)} == {
        HL7_KIND
    }


def test_an_unreadable_wfdb_record_is_refused_with_the_feeds_reason_and_name(tmp_path):
    folder = write_wfdb_tree(tmp_path / "wfdb", 1)
    (data,) = folder.rglob("*.dat")
    data.write_bytes(data.read_bytes()[:100])
    (item,) = _items(ArchiveRoots(wfdb=folder))
    assert isinstance(item, RejectedItem) and item.entry.kind == "wfdb_record"
    assert item.entry.raw_ref == str(data.with_suffix("")) and item.entry.reason.startswith("malformed: data file")

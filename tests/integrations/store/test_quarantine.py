"""Quarantine: what could not be used is kept with its origin and reason until someone retries or resolves it."""

import pytest

from integrations.store import QuarantineEntry, QuarantineState, StoreNotFoundError


def _entry(reason: str = "MSH-9 is not ORU^R01", kind: str = "hl7_message") -> QuarantineEntry:
    return QuarantineEntry(kind=kind, origin="mllp://10.0.0.7:2575", reason=reason, raw_ref="inbox:123")


def test_an_entry_gets_an_id_and_is_listed_as_open(store, clock):
    quarantine_id = store.add_quarantine(_entry())
    [listed] = store.list_quarantine()
    assert listed.id == quarantine_id
    assert listed.entry == _entry()
    assert listed.state == QuarantineState.OPEN and listed.retry_count == 0
    assert listed.created_at == clock.now


def test_entries_are_listed_oldest_first_and_can_be_filtered_by_kind(store):
    first = store.add_quarantine(_entry("one"))
    store.add_quarantine(_entry("two", kind="wfdb_record"))
    third = store.add_quarantine(_entry("three"))
    assert [e.id for e in store.list_quarantine(kind="hl7_message")] == [first, third]


def test_a_retried_entry_counts_its_retries_and_leaves_the_open_list(store, clock):
    quarantine_id = store.add_quarantine(_entry())
    clock.advance(60)
    store.mark_quarantine_retried(quarantine_id)
    store.mark_quarantine_retried(quarantine_id)
    assert store.list_quarantine() == []
    [retried] = store.list_quarantine(state=QuarantineState.RETRIED)
    assert retried.retry_count == 2 and retried.updated_at == clock.now


def test_a_resolved_entry_is_listed_only_when_asked_for(store):
    quarantine_id = store.add_quarantine(_entry())
    store.mark_quarantine_resolved(quarantine_id)
    assert store.list_quarantine() == []
    assert [e.state for e in store.list_quarantine(state=None)] == [QuarantineState.RESOLVED]


def test_entries_can_be_looked_up_by_their_raw_reference(store):
    store.add_quarantine(QuarantineEntry(kind="wfdb_record", origin="/in", reason="bad", raw_ref="/in/a"))
    wanted = store.add_quarantine(QuarantineEntry(kind="wfdb_record", origin="/in", reason="bad", raw_ref="/in/b"))
    assert [e.id for e in store.list_quarantine(raw_ref="/in/b")] == [wanted]


def test_entries_are_counted_by_kind_in_one_state_open_by_default(store):
    for kind, reason in (("hl7_message", "one"), ("wfdb_record", "two"), ("hl7_message", "three")):
        store.add_quarantine(_entry(reason, kind=kind))
    store.mark_quarantine_resolved(store.add_quarantine(_entry(kind="ecg")))
    assert store.count_quarantine() == {"hl7_message": 2, "wfdb_record": 1}
    assert store.count_quarantine(state=QuarantineState.RESOLVED) == {"ecg": 1}
    assert store.count_quarantine(state=QuarantineState.RETRIED) == {}


def test_an_entry_is_found_by_id_in_any_state_and_an_unknown_id_is_named(store):
    quarantine_id = store.add_quarantine(_entry())
    store.mark_quarantine_resolved(quarantine_id)
    assert store.get_quarantine(quarantine_id).state == QuarantineState.RESOLVED
    with pytest.raises(StoreNotFoundError, match="quarantine entry 999"):
        store.get_quarantine(999)


def test_the_same_item_failing_the_same_way_is_one_row_with_a_count_and_first_and_last_seen(store, clock):
    first = store.quarantine(_entry())
    for _ in range(4):
        clock.advance(3600)
        again = store.quarantine(_entry())
        assert again.id == first.id and not again.first_time
    [row] = store.list_quarantine()
    assert first.first_time and again.seen_count == 5
    assert row.seen_count == 5
    assert row.last_seen_at == clock.now and row.created_at < row.last_seen_at


def test_the_same_item_failing_for_another_reason_is_another_row(store):
    store.add_quarantine(_entry("MSH-9 is not ORU^R01"))
    store.add_quarantine(_entry("no OBX segments"))
    assert sorted(e.entry.reason for e in store.list_quarantine()) == ["MSH-9 is not ORU^R01", "no OBX segments"]


def test_a_reason_longer_than_any_index_key_is_still_one_row(store):
    long_reason = "lead V2: " + "x" * 20_000
    store.add_quarantine(_entry(long_reason))
    store.add_quarantine(_entry(long_reason))
    [row] = store.list_quarantine()
    assert row.entry.reason == long_reason and row.seen_count == 2


def test_an_item_seen_again_after_a_retry_is_open_again(store):
    quarantine_id = store.add_quarantine(_entry())
    store.mark_quarantine_retried(quarantine_id)
    assert store.add_quarantine(_entry()) == quarantine_id
    [reopened] = store.list_quarantine()
    assert reopened.state == QuarantineState.OPEN and reopened.retry_count == 1

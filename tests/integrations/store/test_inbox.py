"""The HL7 inbox: a message is stored once per (MSH-3, MSH-4, MSH-10), however often the engine resends it."""

import pytest

from integrations.store import InboxMessage, InboxStatus, StoreNotFoundError


def _message(
    control_id: str = "MSG00001", *, facility: str = "WARD7", raw: bytes = b"MSH|^~\\&|CART|WARD7|..."
) -> InboxMessage:
    return InboxMessage(
        source="mllp",
        sender_application="CART",
        sender_facility=facility,
        control_id=control_id,
        message_type="ORU^R01",
        raw=raw,
    )


def test_a_new_message_is_stored_with_its_raw_bytes_and_received_state(store, clock):
    assert store.add_inbox_message(_message()) is True
    stored = store.get_inbox_message("CART", "WARD7", "MSG00001")
    assert stored is not None
    assert stored.message == _message()
    assert stored.status == InboxStatus.RECEIVED
    assert stored.received_at == clock.now


def test_a_resent_message_is_reported_as_duplicate_and_not_stored_twice(store):
    assert store.add_inbox_message(_message(raw=b"first")) is True
    assert store.add_inbox_message(_message(raw=b"resent")) is False
    assert store.get_inbox_message("CART", "WARD7", "MSG00001").message.raw == b"first"


def test_the_same_control_id_from_another_facility_is_a_different_message(store):
    assert store.add_inbox_message(_message(facility="WARD7")) is True
    assert store.add_inbox_message(_message(facility="ICU")) is True


def test_an_empty_sender_facility_still_dedupes(store):
    assert store.add_inbox_message(_message(facility="")) is True
    assert store.add_inbox_message(_message(facility="")) is False


def test_non_utf8_raw_bytes_survive_the_round_trip(store):
    raw = b"MSH|^~\\&|CART|WARD7|\xe9\xff\x00|\r"
    store.add_inbox_message(_message(raw=raw))
    assert store.get_inbox_message("CART", "WARD7", "MSG00001").message.raw == raw


def test_processing_status_and_error_are_recorded(store):
    store.add_inbox_message(_message())
    inbox_id = store.get_inbox_message("CART", "WARD7", "MSG00001").id
    store.set_inbox_status(inbox_id, InboxStatus.FAILED, error="OBX-5 is not a numeric array")
    stored = store.get_inbox_message("CART", "WARD7", "MSG00001")
    assert stored.status == InboxStatus.FAILED and stored.error == "OBX-5 is not a numeric array"


def test_an_unknown_message_is_none_and_cannot_change_status(store):
    assert store.get_inbox_message("CART", "WARD7", "nope") is None
    with pytest.raises(StoreNotFoundError, match="inbox message 999"):
        store.set_inbox_status(999, InboxStatus.PROCESSED)


def test_messages_in_a_status_are_listed_in_arrival_order_one_page_at_a_time(store):
    for number in range(5):
        store.add_inbox_message(_message(f"MSG{number}"))
    done = store.get_inbox_message("CART", "WARD7", "MSG1").id
    store.set_inbox_status(done, InboxStatus.PROCESSED)
    first_page = store.list_inbox(InboxStatus.RECEIVED, limit=2)
    assert [m.message.control_id for m in first_page] == ["MSG0", "MSG2"]
    next_page = store.list_inbox(InboxStatus.RECEIVED, after_id=first_page[-1].id, limit=2)
    assert [m.message.control_id for m in next_page] == ["MSG3", "MSG4"]
    assert [m.id for m in store.list_inbox(InboxStatus.PROCESSED)] == [done]


def test_messages_are_counted_by_status(store):
    for control_id in ("M1", "M2", "M3"):
        store.add_inbox_message(_message(control_id))
    store.set_inbox_status(store.get_inbox_message("CART", "WARD7", "M2").id, InboxStatus.FAILED, error="no OBX")
    counts = {status: store.count_inbox(status) for status in InboxStatus}
    assert counts == {InboxStatus.RECEIVED: 2, InboxStatus.PROCESSED: 0, InboxStatus.FAILED: 1}

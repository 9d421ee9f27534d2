"""The outbox: write-backs are queued once per idempotency key, leased to one sender, retried, then given up."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from integrations.store import OutboxMessage, OutboxStatus, Store


def _message(key: str = "ecg-1|m-1.0|I48", destination: str = "fhir") -> OutboxMessage:
    payload = {"resourceType": "Observation", "valueQuantity": {"value": 0.91, "unit": "1"}, "codes": ["I48", "I4891"]}
    return OutboxMessage(destination=destination, idempotency_key=key, payload=payload)


def test_a_message_is_queued_once_per_idempotency_key(store):
    assert store.enqueue_outbox(_message()) is True
    assert store.enqueue_outbox(_message()) is False
    stored = store.get_outbox_message("ecg-1|m-1.0|I48")
    assert stored.message == _message() and stored.status == OutboxStatus.PENDING and stored.attempts == 0


def test_claiming_leases_pending_messages_oldest_first_up_to_the_limit(store, clock):
    for key in ("a", "b", "c"):
        store.enqueue_outbox(_message(key))
    claimed = store.claim_outbox(limit=2, lease_s=60)
    assert [m.message.idempotency_key for m in claimed] == ["a", "b"]
    assert all(m.lease_until == clock.now + timedelta(seconds=60) for m in claimed)


def test_a_leased_message_is_not_claimed_again_until_its_lease_runs_out(store, clock):
    store.enqueue_outbox(_message())
    assert len(store.claim_outbox(lease_s=60)) == 1
    assert store.claim_outbox(lease_s=60) == []
    clock.advance(61)  # the sender died without marking it
    assert [m.message.idempotency_key for m in store.claim_outbox(lease_s=60)] == ["ecg-1|m-1.0|I48"]


def test_a_sent_message_is_never_claimed_again_nor_requeued(store, clock):
    store.enqueue_outbox(_message())
    [claimed] = store.claim_outbox()
    store.mark_outbox_sent(claimed.id)
    sent_at = clock.now
    clock.advance(10_000)
    assert store.claim_outbox() == []
    assert store.enqueue_outbox(_message()) is False
    sent = store.get_outbox_message("ecg-1|m-1.0|I48")
    assert sent.status == OutboxStatus.SENT and sent.sent_at == sent_at


def test_a_failed_delivery_is_retried_until_max_attempts_then_marked_failed(store):
    store.enqueue_outbox(_message())
    for attempt in (1, 2):
        [claimed] = store.claim_outbox()
        failed = store.mark_outbox_failed(claimed.id, f"HTTP 503 (try {attempt})", max_attempts=3)
        assert (failed.status, failed.attempts, failed.lease_until) == (OutboxStatus.PENDING, attempt, None)
    [claimed] = store.claim_outbox()
    failed = store.mark_outbox_failed(claimed.id, "HTTP 503 (try 3)", max_attempts=3)
    assert (failed.status, failed.attempts, failed.last_error) == (OutboxStatus.FAILED, 3, "HTTP 503 (try 3)")
    assert store.claim_outbox() == []


def test_claiming_can_be_limited_to_one_destination(store):
    store.enqueue_outbox(_message("to-fhir", destination="fhir"))
    store.enqueue_outbox(_message("to-hl7", destination="hl7"))
    assert [m.message.idempotency_key for m in store.claim_outbox(destination="hl7")] == ["to-hl7"]


def test_concurrent_senders_never_claim_the_same_message(store_url, clock):
    seed = Store.from_url(store_url, clock=clock)
    for number in range(40):
        seed.enqueue_outbox(_message(f"key-{number}"))
    senders = [Store.from_url(store_url, clock=clock) for _ in range(4)]

    def drain(sender: Store) -> list[str]:
        keys: list[str] = []
        while batch := sender.claim_outbox(limit=3):
            keys += [m.message.idempotency_key for m in batch]
        return keys

    with ThreadPoolExecutor(max_workers=4) as pool:
        claimed = [key for keys in pool.map(drain, senders) for key in keys]
    for store in [seed, *senders]:
        store.dispose()
    assert sorted(claimed) == sorted(f"key-{number}" for number in range(40))


def test_messages_are_counted_by_status(store):
    for key in ("a", "b", "c"):
        store.enqueue_outbox(_message(key))
    [claimed] = store.claim_outbox(limit=1)
    store.mark_outbox_sent(claimed.id)
    counts = {status: store.count_outbox(status) for status in OutboxStatus}
    assert counts == {OutboxStatus.PENDING: 2, OutboxStatus.SENT: 1, OutboxStatus.FAILED: 0}


def test_releasing_the_leases_of_a_dead_run_makes_its_pending_messages_claimable_at_once(store, clock):
    for key in ("a", "b"):
        store.enqueue_outbox(_message(key))
    store.enqueue_outbox(_message("c"))  # never claimed: nothing to release
    store.claim_outbox(limit=2, lease_s=300)  # by a run that then died
    assert store.release_outbox_leases() == 2
    assert store.get_outbox_message("a").lease_until is None and store.get_outbox_message("a").updated_at == clock.now
    assert [m.message.idempotency_key for m in store.claim_outbox()] == ["a", "b", "c"]


def test_releasing_leases_leaves_sent_messages_and_other_destinations_alone(store):
    store.enqueue_outbox(_message("to-fhir", destination="fhir"))
    store.enqueue_outbox(_message("to-hl7", destination="hl7"))
    store.enqueue_outbox(_message("sent", destination="hl7"))
    leased = {m.message.idempotency_key: m for m in store.claim_outbox()}
    store.mark_outbox_sent(leased["sent"].id)
    assert store.release_outbox_leases(destination="hl7") == 1
    assert store.get_outbox_message("to-hl7").lease_until is None
    assert store.get_outbox_message("to-fhir").lease_until == leased["to-fhir"].lease_until

"""Write-backs under way while the run goes on: worker threads send, the run's thread records.

Every outbox message is one study's results for one sink (:mod:`agent.sinks`). What can go
wrong, and what follows:

- **the message itself is refused** (the receiver answers 4xx, the manifest lacks a code, the
  payload cannot be read): the attempt is counted on the row; after the store's maximum the
  row is *parked* (status ``failed``), shown by ``status`` and ``outbox list``, and put back
  with ``outbox requeue``. The run that saw the failure ends ``degraded`` (non-zero exit).
- **the receiver is unreachable** after the client's own retries (an infrastructure failure):
  that sink is taken out of this run at once — no message is blamed, no attempt is counted,
  nothing more is claimed for it — and the run ends ``failed``. Its messages wait, pending,
  for the next run.

Only the run's thread touches the store, and in few statements: per sink, messages are claimed
:data:`QUEUE_DEPTH` times ``max_in_flight`` at a time (at most that many leased and not yet
delivered, so no lease runs out while its message waits for a worker), and deliveries are marked
sent :data:`MARK_SENT_EVERY` at a time and at :meth:`Deliveries.finish`. A failure is recorded only
by :meth:`Deliveries.finish`: recording releases the lease, and a released message would be claimed
again at once; so each message gets one attempt per run. Leaving the block early (the store failed)
waits for the sends under way and records nothing: their leases are released at the next run's
start and the idempotent receivers absorb the resend (so do they for a delivery not yet marked).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from agent.errors import AgentError
from agent.sinks import ResultSink
from agent.sinks.payload import ResultPayload
from integrations.errors import IntegrationError
from integrations.fhir.errors import FhirUnavailableError
from integrations.hl7.errors import MllpConnectionError
from integrations.store import Store, StoredOutboxMessage

log = logging.getLogger(__name__)

#: Messages leased per sink, in multiples of its ``max_in_flight``: one claim fills the workers' queue for a while.
QUEUE_DEPTH = 4
#: Delivered messages marked sent in one UPDATE (one statement per delivery cost more than the delivery's SQL).
MARK_SENT_EVERY = 16
#: Failures that say the receiver cannot be reached at all, rather than that it refused this message.
UNREACHABLE_ERRORS: tuple[type[Exception], ...] = (FhirUnavailableError, MllpConnectionError)


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    error: str
    unreachable: bool


@dataclass(slots=True)
class DeliveryTally:
    """What the deliveries of one run came to; the run's report reads it."""

    sent: int = 0
    failed: int = 0
    parked: int = 0
    #: Sinks taken out of the run because their receiver could not be reached, with the reason.
    unreachable: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class Deliveries:
    """The run's write-backs: ``pump`` between batches, ``finish`` once every source is read."""

    def __init__(
        self,
        store: Store,
        sinks: Sequence[ResultSink],
        *,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store, self._sinks = store, sinks
        self._deadline, self._clock = deadline, clock
        self._pools = {
            sink.destination: ThreadPoolExecutor(
                sink.max_in_flight, thread_name_prefix=f"write-back-{sink.destination}"
            )
            for sink in sinks
        }
        # Set by the worker that finds a receiver unreachable, so the messages queued behind it are not sent.
        self._down = {sink.destination: threading.Event() for sink in sinks}
        self._under_way: dict[Future[DeliveryFailure | None], tuple[ResultSink, StoredOutboxMessage]] = {}
        self._failures: list[tuple[StoredOutboxMessage, str]] = []
        self._delivered: list[int] = []  # sent, not yet marked
        self.tally = DeliveryTally()

    def __enter__(self) -> Deliveries:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for future in self._under_way:
            future.cancel()
        for pool in self._pools.values():
            pool.shutdown(wait=True)

    def pump(self) -> None:
        """Record the deliveries that have finished and start pending ones, without waiting."""
        self._record([future for future in self._under_way if future.done()])
        for sink in self._sinks:
            self._start(sink)

    def finish(self) -> None:
        """Deliver every pending message once (until the deadline), then record the failures."""
        self.pump()
        while self._under_way:
            finished, _ = wait(self._under_way, return_when=FIRST_COMPLETED)
            self._record(list(finished))
            for sink in self._sinks:
                self._start(sink)
        self._mark_sent()
        for message, error in self._failures:
            self._record_failure(message, error)
        self._failures.clear()
        for destination in self.tally.unreachable:
            # Its claimed-but-unsent messages are ours (we hold the run lock): free them for the next run now.
            self._store.release_outbox_leases(destination=destination)

    def _start(self, sink: ResultSink) -> None:
        if sink.destination in self.tally.unreachable or self._past_deadline():
            return
        under_way = sum(1 for owner, _ in self._under_way.values() if owner is sink)
        if under_way > sink.max_in_flight:
            return  # the workers still have a queue: claim again in one go when it has run down
        room = QUEUE_DEPTH * sink.max_in_flight - under_way
        pool = self._pools[sink.destination]
        for message in self._store.claim_outbox(destination=sink.destination, limit=room):
            future = pool.submit(_deliver, sink, message, self._down[sink.destination])
            self._under_way[future] = (sink, message)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    def _record(self, finished: list[Future[DeliveryFailure | None]]) -> None:
        sent = []
        for future in finished:
            sink, message = self._under_way.pop(future)
            failure = future.result()  # anything but the translated failures is a bug: let it end the run
            if failure is None:
                sent.append(message)
            elif failure.unreachable:
                self._take_out(sink, failure.error)
            else:
                self._failures.append((message, failure.error))
        self._delivered += [message.id for message in sent]
        self.tally.sent += len(sent)
        if len(self._delivered) >= MARK_SENT_EVERY:
            self._mark_sent()

    def _mark_sent(self) -> None:
        if self._delivered:
            self._store.mark_outbox_sent_many(self._delivered)
            self._delivered = []

    def _take_out(self, sink: ResultSink, error: str) -> None:
        if sink.destination not in self.tally.unreachable:
            self.tally.unreachable[sink.destination] = error
            log.error("write-back to %s stopped for this run: %s", sink.destination, error)

    def _record_failure(self, message: StoredOutboxMessage, error: str) -> None:
        stored = self._store.mark_outbox_failed(message.id, error)
        key = message.message.idempotency_key
        self.tally.failed += 1
        parked = stored.status.value == "failed"
        self.tally.parked += parked
        outcome = f"parked after {stored.attempts} attempts" if parked else f"attempt {stored.attempts}"
        self.tally.problems.append(f"write-back {key} ({outcome}): {error}")
        log.warning("write-back %s failed (%s): %s", key, outcome, error)


def _deliver(sink: ResultSink, message: StoredOutboxMessage, down: threading.Event) -> DeliveryFailure | None:
    """Send one message; why it failed, or None (the per-message boundary)."""
    if down.is_set():
        return DeliveryFailure(f"not sent: {sink.destination} was found unreachable", unreachable=True)
    try:
        sink.send(ResultPayload.from_json(message.message.payload))
    except UNREACHABLE_ERRORS as exc:
        down.set()
        return DeliveryFailure(str(exc), unreachable=True)
    except (IntegrationError, AgentError, ValueError, KeyError, TypeError) as exc:
        # KeyError/TypeError: a stored payload that no longer reads (hand-edited, or from a future version).
        return DeliveryFailure(f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError | TypeError) else str(exc),
                               unreachable=False)  # fmt: skip
    return None

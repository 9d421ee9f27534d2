"""Flow control for one FHIR server, shared by every thread that uses one :class:`FhirClient`.

Retries alone make a slow server slower: each request that times out is abandoned by us but not by the
server, which goes on working on it while the retry queues behind. So every attempt first takes a slot:

* **An adaptive concurrency limit** (AIMD, between 1 and ``max_concurrent_requests``): halved when the
  server times out or says it is overloaded (429, 503), one more after a run of successes. A request that
  timed out keeps its slot for ``abandoned_hold_s`` (the server is presumably still working on it), so the
  requests in flight plus those abandoned never exceed the limit.
* **A circuit breaker**: after ``breaker_failures`` failed attempts in a row (timeouts, connection errors,
  429, 5xx) calls fail fast with :class:`FhirCircuitOpenError` for ``breaker_cooldown_s``; then one probe
  goes through (half-open), and its success closes the breaker, its failure opens it for another cool-down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

from integrations.fhir.config import FlowPolicy
from integrations.fhir.errors import FhirCircuitOpenError

logger = logging.getLogger(__name__)

#: Longest a thread waiting for a slot sleeps before it looks again (at the breaker, at the clock).
_MAX_WAIT_S = 0.5


class Outcome(Enum):
    """What one attempt says about the server's health."""

    ANSWERED = "answered"  # a 2xx, or an answer retrying cannot change (4xx): the server is working
    FAILED = "failed"  # a broken connection or a 5xx: the breaker counts it
    OVERLOADED = "overloaded"  # 429, 503, a connect timeout: the breaker counts it and the limit halves
    ABANDONED = "abandoned"  # a read/write timeout: as overloaded, and the server still holds the request


@dataclass(slots=True)
class Slot:
    """One admitted attempt; the client sets :attr:`outcome` before leaving the ``with`` block."""

    outcome: Outcome = Outcome.FAILED


class AdaptiveLimit:
    """How many attempts may be at the server at once: in flight plus abandoned ≤ :attr:`limit`."""

    def __init__(self, policy: FlowPolicy, *, abandoned_hold_s: float, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._abandoned_hold_s = abandoned_hold_s
        self._clock = clock
        self._changed = threading.Condition()
        self.limit = policy.max_concurrent_requests
        self.in_flight = 0
        self._abandoned_until: list[float] = []
        self._successes = 0

    @property
    def abandoned(self) -> int:
        with self._changed:
            self._forget_expired()
            return len(self._abandoned_until)

    def acquire(self, before_each_wait: Callable[[], None]) -> None:
        """Wait for a free slot; ``before_each_wait`` may raise to stop waiting (the breaker opened)."""
        with self._changed:
            while True:
                self._forget_expired()
                if self.in_flight + len(self._abandoned_until) < self.limit:
                    self.in_flight += 1
                    return
                before_each_wait()
                next_expiry_s = min(self._abandoned_until, default=self._clock() + _MAX_WAIT_S) - self._clock()
                self._changed.wait(timeout=min(max(next_expiry_s, 0.0), _MAX_WAIT_S))

    def release(self, outcome: Outcome) -> None:
        with self._changed:
            self.in_flight -= 1
            if outcome is Outcome.ANSWERED:
                self._successes += 1
                if (
                    self._successes >= self._policy.successes_to_grow
                    and self.limit < self._policy.max_concurrent_requests
                ):
                    self.limit += 1
                    self._successes = 0
            elif outcome in (Outcome.OVERLOADED, Outcome.ABANDONED):
                self._successes = 0
                self.limit = max(1, self.limit // 2)
                if outcome is Outcome.ABANDONED:
                    self._abandoned_until.append(self._clock() + self._abandoned_hold_s)
            self._changed.notify_all()

    def _forget_expired(self) -> None:
        now_s = self._clock()
        self._abandoned_until = [until_s for until_s in self._abandoned_until if until_s > now_s]


class CircuitBreaker:
    """Closed, open for a cool-down after too many failures in a row, then half-open for one probe."""

    def __init__(self, policy: FlowPolicy, *, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self.consecutive_failures = 0
        self._opened_at_s: float | None = None
        self._probe_in_flight = False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at_s is not None

    def admit(self, method: str, url: str) -> bool:
        """Let an attempt through (True when it is the half-open probe) or raise :class:`FhirCircuitOpenError`."""
        with self._lock:
            if self._opened_at_s is None:
                return False
            retry_in_s = self._opened_at_s + self._policy.breaker_cooldown_s - self._clock()
            if retry_in_s > 0 or self._probe_in_flight:
                raise FhirCircuitOpenError(method, url, self.consecutive_failures, max(retry_in_s, 0.0))
            self._probe_in_flight = True
            logger.info("FHIR server cooled down: one probe request (%s %s)", method, url)
            return True

    def check(self, method: str, url: str) -> None:
        """Raise :class:`FhirCircuitOpenError` while open (for threads still waiting for a slot)."""
        with self._lock:
            if self._opened_at_s is not None:
                retry_in_s = self._opened_at_s + self._policy.breaker_cooldown_s - self._clock()
                raise FhirCircuitOpenError(method, url, self.consecutive_failures, max(retry_in_s, 0.0))

    def record(self, outcome: Outcome, *, probe: bool) -> None:
        with self._lock:
            if probe:
                self._probe_in_flight = False
            if outcome is Outcome.ANSWERED:
                if self._opened_at_s is not None and probe:
                    logger.info("FHIR server answers again: circuit closed")
                if probe or self._opened_at_s is None:
                    self._opened_at_s = None
                    self.consecutive_failures = 0
                return
            self.consecutive_failures += 1
            if probe or (self._opened_at_s is None and self.consecutive_failures >= self._policy.breaker_failures):
                self._opened_at_s = self._clock()
                logger.warning(
                    "FHIR server failed %d time(s) in a row: calls fail fast for %g s",
                    self.consecutive_failures,
                    self._policy.breaker_cooldown_s,
                )


class FlowControl:
    """The limit and the breaker of one client; ``with flow.slot(method, url) as slot:`` around each attempt."""

    def __init__(self, policy: FlowPolicy, *, abandoned_hold_s: float, clock: Callable[[], float]) -> None:
        self.limit = AdaptiveLimit(policy, abandoned_hold_s=abandoned_hold_s, clock=clock)
        self.breaker = CircuitBreaker(policy, clock=clock)

    @contextmanager
    def slot(self, method: str, url: str) -> Iterator[Slot]:
        """Admit one attempt: fail fast while the breaker is open, else wait for room under the limit."""
        probe = self.breaker.admit(method, url)
        self.limit.acquire(lambda: None if probe else self.breaker.check(method, url))
        slot = Slot()
        try:
            yield slot
        finally:
            # The breaker first: a thread woken by the release must see it open, not take the slot.
            self.breaker.record(slot.outcome, probe=probe)
            self.limit.release(slot.outcome)

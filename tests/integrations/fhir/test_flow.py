"""Flow control: the adaptive concurrency limit and the circuit breaker shared by the threads of one client.

First against an httpx.MockTransport and a clock that moves only when told (the breaker's states, the
limit's arithmetic, the retry budget), then against a deliberately slow HTTP server on 127.0.0.1 with four
sender threads, as the write-back uses the client.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from integrations.fhir import (
    FhirCircuitOpenError,
    FhirClient,
    FhirConfig,
    FhirHttpError,
    FhirUnavailableError,
    RetryPolicy,
)
from integrations.fhir.config import FlowPolicy

BASE_URL = "https://fhir.example.org/r4"
BUNDLE = {"resourceType": "Bundle", "type": "transaction-response", "entry": []}
COOLDOWN_S = 60.0


class FakeClock:
    """Monotonic seconds that move only when the client sleeps or a test says so."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


@dataclass
class ScriptedServer:
    """A MockTransport whose answer is chosen by ``answer`` at request time; counts requests."""

    answer: Callable[[], httpx.Response | Exception]
    requests: int = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        result = self.answer()
        if isinstance(result, Exception):
            raise result
        return result


def ok() -> httpx.Response:
    return httpx.Response(200, json=BUNDLE, headers={"Content-Type": "application/fhir+json"})


def unavailable() -> httpx.Response:
    return httpx.Response(503, json={}, headers={"Content-Type": "application/fhir+json"})


def make_client(server: ScriptedServer, clock: FakeClock, *, attempts: int = 1, **flow: float) -> FhirClient:
    policy = FlowPolicy(**({"breaker_failures": 5, "breaker_cooldown_s": COOLDOWN_S} | flow))  # type: ignore[arg-type]
    retry = RetryPolicy(max_attempts=attempts, base_delay_s=0.0, budget_s=90.0)
    config = FhirConfig(base_url=BASE_URL, retry=retry, flow=policy)
    transport = httpx.MockTransport(server.handle)
    return FhirClient(config, transport=transport, sleep=clock.sleep, monotonic=clock, rng=random.Random(0))


# --- the circuit breaker -------------------------------------------------------------------------------------------


def test_the_breaker_opens_after_five_failures_in_a_row_and_then_calls_fail_fast_without_a_request():
    clock, server = FakeClock(), ScriptedServer(unavailable)
    client = make_client(server, clock)
    for _ in range(5):
        with pytest.raises(FhirUnavailableError):
            client.transaction(BUNDLE)

    with pytest.raises(FhirCircuitOpenError, match=r"failed 5 time\(s\) in a row; calls fail fast for another 60 s"):
        client.transaction(BUNDLE)
    assert server.requests == 5
    assert isinstance(FhirCircuitOpenError("POST", "u", 5, 1.0), FhirUnavailableError)  # callers treat it alike


def test_a_retry_loop_stops_at_the_open_breaker_instead_of_using_all_its_attempts():
    clock, server = FakeClock(), ScriptedServer(unavailable)
    with pytest.raises(FhirCircuitOpenError):
        make_client(server, clock, attempts=10).transaction(BUNDLE)
    assert server.requests == 5


def test_after_the_cooldown_one_probe_goes_through_a_failed_probe_reopens_a_good_one_closes():
    clock, server = FakeClock(), ScriptedServer(unavailable)
    client = make_client(server, clock)
    for _ in range(5):
        with pytest.raises(FhirUnavailableError):
            client.transaction(BUNDLE)

    clock.now_s += COOLDOWN_S
    with pytest.raises(FhirUnavailableError) as probe:  # the probe reaches the server, which still fails
        client.transaction(BUNDLE)
    assert not isinstance(probe.value, FhirCircuitOpenError) and server.requests == 6
    with pytest.raises(FhirCircuitOpenError):  # open again, for a whole new cooldown
        client.transaction(BUNDLE)

    server.answer = ok
    clock.now_s += COOLDOWN_S
    assert client.transaction(BUNDLE) == BUNDLE  # the probe succeeds: closed
    assert [client.transaction(BUNDLE) for _ in range(3)] == [BUNDLE] * 3
    assert server.requests == 10


def test_an_answer_that_retrying_cannot_change_is_not_a_failure_of_the_server():
    clock = FakeClock()
    answers = iter([unavailable()] * 4 + [httpx.Response(404, json={})] + [unavailable()])
    client = make_client(ScriptedServer(lambda: next(answers)), clock)
    for _ in range(4):
        with pytest.raises(FhirUnavailableError):
            client.transaction(BUNDLE)
    with pytest.raises(FhirHttpError):
        client.transaction(BUNDLE)  # the server answered: the run of failures is over
    with pytest.raises(FhirUnavailableError) as caught:
        client.transaction(BUNDLE)
    assert not isinstance(caught.value, FhirCircuitOpenError)
    assert not client.flow.breaker.is_open


# --- the adaptive limit --------------------------------------------------------------------------------------------


def test_a_timeout_halves_the_limit_and_keeps_its_slot_for_the_hold_then_successes_grow_it_back_to_the_max():
    clock = FakeClock()
    server = ScriptedServer(lambda: httpx.ReadTimeout("slow"))
    client = make_client(server, clock, max_concurrent_requests=4, successes_to_grow=2, abandoned_hold_s=10.0)
    limit = client.flow.limit

    with pytest.raises(FhirUnavailableError):
        client.transaction(BUNDLE)
    assert (limit.limit, limit.abandoned) == (2, 1)
    clock.now_s += 10.0
    assert limit.abandoned == 0  # the server has had its time

    server.answer = ok
    sizes = []
    for _ in range(8):
        client.transaction(BUNDLE)
        sizes.append(limit.limit)
    assert sizes == [2, 3, 3, 4, 4, 4, 4, 4]  # +1 per two successes, never beyond the configured max


def test_the_retry_budget_counts_the_time_spent_in_attempts_not_only_the_waits_between_them():
    clock = FakeClock()

    def forty_seconds_then_timeout() -> Exception:
        clock.now_s += 40.0
        return httpx.ReadTimeout("slow")

    server = ScriptedServer(forty_seconds_then_timeout)
    client = make_client(server, clock, attempts=10, abandoned_hold_s=0.0)
    with pytest.raises(FhirUnavailableError, match=r"after 3 attempt\(s\)"):
        client.transaction(BUNDLE)  # 40 + 40 s spent < 90 s: a third attempt; 120 s: no fourth


# --- against a slow server on 127.0.0.1 ----------------------------------------------------------------------------

SERVER_REQUEST_CAP = 300
MAX_HANDLER_DELAY_S = 2.0


@dataclass
class SlowServerState:
    delay_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    concurrent: int = 0
    peak_concurrent: int = 0
    requests: int = 0


class SlowFhirHandler(BaseHTTPRequestHandler):
    """Answers every POST with a transaction-response Bundle after ``state.delay_s``, counting who waits."""

    state: SlowServerState

    def do_POST(self) -> None:
        state = self.state
        with state.lock:
            state.requests += 1
            state.concurrent += 1
            state.peak_concurrent = max(state.peak_concurrent, state.concurrent)
            refused = state.requests > SERVER_REQUEST_CAP
        try:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(min(state.delay_s, MAX_HANDLER_DELAY_S))  # working on it, whether the client waits or not
            body = json.dumps(BUNDLE).encode()
            self.send_response(500 if refused else 200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with state.lock:
                state.concurrent -= 1

    def log_message(self, *_args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, *_args: object) -> None:
        pass  # the client hung up on a request it had given up on: that is the point


@pytest.fixture
def slow_server() -> Iterator[tuple[str, SlowServerState]]:
    state = SlowServerState(delay_s=1.0)
    handler = type("Handler", (SlowFhirHandler,), {"state": state})
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fhir", state
    server.shutdown()
    server.server_close()
    thread.join(5.0)


def _send_from_threads(client: FhirClient, *, threads: int, calls_each: int) -> list[str]:
    """What each call ended in: "ok" or the exception's class name."""
    results: list[str] = []
    lock = threading.Lock()

    def sender() -> None:
        for _ in range(calls_each):
            try:
                client.transaction(BUNDLE)
                outcome = "ok"
            except FhirUnavailableError as exc:
                outcome = type(exc).__name__
            with lock:
                results.append(outcome)

    workers = [threading.Thread(target=sender) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60.0)
    return results


def test_four_senders_against_a_server_slower_than_the_timeout_then_after_it_recovers(slow_server):
    base_url, state = slow_server
    config = FhirConfig(
        base_url=base_url,
        timeout_s=0.2,
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, budget_s=10.0),
        flow=FlowPolicy(max_concurrent_requests=4, breaker_failures=5, breaker_cooldown_s=1.0, abandoned_hold_s=1.5),
    )
    with FhirClient(config) as client:
        results = _send_from_threads(client, threads=4, calls_each=5)

        assert "ok" not in results
        assert "FhirCircuitOpenError" in results  # the breaker opened and later calls failed fast
        assert client.flow.limit.limit == 1  # halved on the timeouts
        # The server never held more requests than the limit allowed, abandoned ones included.
        assert state.peak_concurrent <= 4
        requests_while_open = state.requests
        with pytest.raises(FhirCircuitOpenError):
            client.transaction(BUNDLE)
        assert state.requests == requests_while_open  # failing fast: nothing was sent

        state.delay_s = 0.0  # the server recovers
        time.sleep(config.abandoned_hold_s + 0.1)  # past the cooldown and the holds
        assert client.transaction(BUNDLE) == BUNDLE  # the half-open probe closes the breaker
        assert set(_send_from_threads(client, threads=4, calls_each=5)) == {"ok"}
        assert client.flow.limit.limit > 1  # growing back with the successes
    assert state.peak_concurrent <= 4

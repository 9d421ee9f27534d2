"""The listener's edges: stalled and idle peers, too many connections, garbage, stable quarantine keys, TLS policy.

Peers are raw sockets on 127.0.0.1 (to stall, flood or misbehave at byte level) and python-hl7's clients
(to show a well-behaved engine is unaffected).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable

import hl7
import pytest
from hl7.client import MLLPClient
from hl7.mllp import open_hl7_connection

from integrations.addresses import is_loopback_host
from integrations.hl7 import MllpListener, MllpListenerConfig, PlaintextListenerError
from integrations.hl7.mllp import END_BLOCK, START_BLOCK
from integrations.store import InboxMessage, QuarantineEntry, Store

LOOPBACK = "127.0.0.1"
SOCKET_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 0.3
GARBAGE_BYTES = 1024 * 1024


class RecordingStore:
    """The real store, with every quarantine call kept in order: what a row-merging store would be given."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.quarantined: list[QuarantineEntry] = []

    def add_inbox_message(self, message: InboxMessage) -> bool:
        return self._store.add_inbox_message(message)

    def add_quarantine(self, entry: QuarantineEntry) -> int:
        self.quarantined.append(entry)
        return self._store.add_quarantine(entry)


@pytest.fixture
def recording(store: Store) -> RecordingStore:
    return RecordingStore(store)


@pytest.fixture
def start(recording: RecordingStore, start_listener) -> Callable[..., int]:
    """``start(**MllpListenerConfig fields)``: a listener on the recording store; its port."""
    return lambda **config: start_listener(inbox=recording, **config).port


def msa(framed: bytes) -> tuple[str, str]:
    segment = hl7.parse(framed.strip(START_BLOCK + END_BLOCK).decode()).segment("MSA")
    return str(segment[1]), str(segment[2])


def closed_by_listener(connection: socket.socket) -> bool:
    """True when the listener closes the connection before our socket timeout (EOF or reset)."""
    try:
        while connection.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def wait_until(condition: Callable[[], bool], *, timeout_s: float = SOCKET_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- idle and stalled peers ----------------------------------------------------------------------------------------


def test_a_peer_that_stalls_inside_a_frame_is_closed_and_the_partial_frame_quarantined_once(
    start, recording, oru_bytes
):
    port = start(idle_timeout_s=IDLE_TIMEOUT_S)
    message = oru_bytes("STALL-1")
    with socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S) as connection:
        connection.sendall(START_BLOCK + message[: len(message) // 3])
        assert closed_by_listener(connection)
    time.sleep(3 * IDLE_TIMEOUT_S)  # nothing more is recorded for that connection later
    [entry] = recording.quarantined
    assert entry.raw_ref == "msh=ECG_CART|CARDIOLOGY|STALL-1"
    assert entry.reason == f"malformed: nothing received inside a frame for {IDLE_TIMEOUT_S:g} s"


def test_a_start_byte_and_a_few_bytes_then_silence_is_quarantined_under_the_connection(start, recording):
    port = start(idle_timeout_s=IDLE_TIMEOUT_S)
    with socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S) as connection:
        connection.sendall(START_BLOCK + b"\x00\x17garbage")
        assert closed_by_listener(connection)
    [entry] = recording.quarantined
    assert entry.raw_ref.startswith(f"connection={entry.origin}#")
    assert entry.origin.startswith("mllp://127.0.0.1:")


def test_an_engine_idle_between_messages_is_disconnected_quietly_and_reconnects(start, recording, oru_bytes):
    """python-hl7's asyncio client keeps its connection; after the idle timeout the listener has closed it."""
    port = start(idle_timeout_s=IDLE_TIMEOUT_S)
    # Built before connecting: encoding a 12-lead ORU can take longer than the idle timeout on a busy machine.
    first, second = hl7.parse(oru_bytes("IDLE-1").decode()), oru_bytes("IDLE-2")

    async def send_then_idle() -> bytes:
        reader, writer = await open_hl7_connection(LOOPBACK, port, encoding="ascii")
        try:
            writer.writemessage(first)
            await writer.drain()
            await asyncio.wait_for(reader.readmessage(), SOCKET_TIMEOUT_S)
            return await asyncio.wait_for(reader.read(), SOCKET_TIMEOUT_S)  # b"" at the listener's close
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    assert asyncio.run(send_then_idle()) == b""
    assert recording.quarantined == []  # an idle engine lost nothing: nothing to quarantine
    with MLLPClient(LOOPBACK, port) as client:
        assert msa(client.send_message(second)) == ("AA", "IDLE-2")


# --- too many connections ------------------------------------------------------------------------------------------


def test_connections_beyond_the_limit_are_closed_at_once_with_a_reason_in_the_log(start, oru_bytes, caplog):
    port = start(max_connections=2)
    caplog.set_level(logging.WARNING, logger="integrations.hl7.listener")
    with contextlib.ExitStack() as held:
        first, _second = (
            held.enter_context(socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S)) for _ in range(2)
        )
        with socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S) as third:
            started_s = time.monotonic()
            assert closed_by_listener(third)
            assert time.monotonic() - started_s < SOCKET_TIMEOUT_S / 2  # at once, not by some timeout
        assert "refused: 2 connections open, the limit (max_connections)" in caplog.text
        first.close()
        # A slot is free again once the listener has seen the close: the engine's retry gets through.
        assert wait_until(lambda: _try_send(port, oru_bytes("RETRY-1")) == ("AA", "RETRY-1"))


def _try_send(port: int, message: bytes) -> tuple[str, str] | None:
    """(MSA-1, MSA-2) of the ACK, or None when the listener hung up instead of answering."""
    try:
        with MLLPClient(LOOPBACK, port) as client:
            answer = client.send_message(message)
    except OSError:
        return None
    return msa(answer) if answer else None


# --- stable quarantine keys ----------------------------------------------------------------------------------------


def test_every_resend_of_a_refused_message_is_quarantined_under_the_same_key(start, recording, oru_bytes):
    port = start()
    refused = oru_bytes("RESENT-1").replace(b"|ORU^R01^ORU_R01|", b"|ADT^A01^ADT_A01|")
    for _ in range(5):
        with MLLPClient(LOOPBACK, port) as client:
            assert msa(client.send_message(refused)) == ("AR", "RESENT-1")
    assert len(recording.quarantined) == 5
    assert {(e.raw_ref, e.reason) for e in recording.quarantined} == {
        ("msh=ECG_CART|CARDIOLOGY|RESENT-1", "unsupported: message type 'ADT^A01' is not ORU^R01")
    }


def _flood(port: int, garbage: bytes) -> None:
    """Send ``garbage`` and close; the listener may hang up first (that is one of the things tested)."""
    with socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S) as connection:
        reader = threading.Thread(target=closed_by_listener, args=(connection,), daemon=True)
        reader.start()  # drain the ACKs, so neither side blocks on a full buffer
        with contextlib.suppress(ConnectionError):
            connection.sendall(garbage)
            connection.shutdown(socket.SHUT_WR)
        reader.join(SOCKET_TIMEOUT_S)


def test_a_megabyte_of_random_bytes_on_one_connection_is_a_handful_of_items_of_that_connection(start, recording):
    port = start(max_message_bytes=64 * 1024, max_unreadable_frames=1_000_000)
    _flood(port, random.Random(7).randbytes(GARBAGE_BYTES))
    assert wait_until(lambda: len(recording.quarantined) > 10)  # the random bytes hold many "frames"
    time.sleep(0.5)
    refs = {entry.raw_ref for entry in recording.quarantined}
    assert len(refs) == 1 and refs.pop().startswith("connection=mllp://127.0.0.1:")
    assert len({(e.raw_ref, e.reason) for e in recording.quarantined}) <= 4


def test_a_peer_that_sends_only_unreadable_frames_is_disconnected(start, recording, oru_bytes):
    port = start(max_unreadable_frames=3)
    garbage = b"".join(START_BLOCK + f"not hl7 {n}".encode() + END_BLOCK for n in range(100))
    with socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S) as connection:
        connection.sendall(garbage)
        assert closed_by_listener(connection)
    assert [e.reason for e in recording.quarantined] == ["malformed: not an HL7 v2 message (no MSH segment)"] * 3
    with MLLPClient(LOOPBACK, port) as engine:  # a real engine is not affected
        assert msa(engine.send_message(oru_bytes("AFTER-1"))) == ("AA", "AFTER-1")


# --- TLS policy ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True), ("LOCALHOST.", True),
     ("0.0.0.0", False), ("", False), ("::", False), ("10.1.2.3", False), ("mllp.hospital.local", False)],
)  # fmt: skip
def test_loopback_means_127_0_0_0_8_the_ipv6_loopback_and_localhost(host, loopback):
    assert is_loopback_host(host) is loopback


def _start_and_stop(store: Store, config: MllpListenerConfig) -> tuple[str, int]:
    async def bind() -> tuple[str, int]:
        async with MllpListener(store, config) as listener:
            return listener.address

    return asyncio.run(bind())


def test_a_plaintext_listener_on_all_interfaces_is_refused(store):
    with pytest.raises(PlaintextListenerError, match=r"'0\.0\.0\.0' without TLS"):
        _start_and_stop(store, MllpListenerConfig(host="0.0.0.0", port=0))


def test_plaintext_on_all_interfaces_when_explicitly_allowed_starts_with_a_warning(store, caplog):
    caplog.set_level(logging.WARNING, logger="integrations.hl7.listener")
    host, _ = _start_and_stop(store, MllpListenerConfig(host="0.0.0.0", port=0, allow_plaintext=True))
    assert host == "0.0.0.0"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "WITHOUT TLS" in warning.getMessage()


def test_tls_on_all_interfaces_needs_no_permission(store, tls_files):
    context = tls_files.server_context(require_client_cert=False)
    assert _start_and_stop(store, MllpListenerConfig(host="0.0.0.0", port=0, ssl_context=context))[0] == "0.0.0.0"

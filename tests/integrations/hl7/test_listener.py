"""The MLLP listener, driven by independent peers: python-hl7's client and asyncio streams, raw sockets."""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections.abc import Callable

import hl7
import pytest
from hl7.client import MLLPClient
from hl7.mllp import open_hl7_connection

from integrations.hl7 import MllpListener, MllpListenerConfig
from integrations.hl7.mllp import END_BLOCK, START_BLOCK
from integrations.store import InboxStatus, QuarantineState, Store

LOOPBACK = "127.0.0.1"
#: A small limit keeps the oversized-message row quick; the mechanism is the same at the 16 MiB default.
TEST_MAX_MESSAGE_BYTES = 1024 * 1024
HUGE_MESSAGE_BYTES = 200 * 1024 * 1024
STREAM_CHUNK_BYTES = 1024 * 1024
SOCKET_TIMEOUT_S = 10.0


def msa(ack: hl7.Message) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK as python-hl7 reads it."""
    segment = ack.segment("MSA")
    return str(segment[1]), str(segment[2])


def inbox_rows(store: Store) -> int:
    return store.count_inbox(InboxStatus.RECEIVED)


def test_a_message_is_committed_to_the_inbox_before_it_is_acked_aa(listener, send, oru_bytes, store):
    message = oru_bytes("MSG-1")
    [ack] = send(listener.port, message)
    assert msa(ack) == ("AA", "MSG-1")
    stored = store.get_inbox_message("ECG_CART", "CARDIOLOGY", "MSG-1")
    assert stored is not None
    assert (stored.message.raw, stored.message.message_type, stored.message.source) == (message, "ORU^R01", "mllp")


def test_one_connection_carries_many_messages(listener, send, oru_bytes, store):
    acks = send(listener.port, *(oru_bytes(f"MSG-{n}", seed=n) for n in range(5)))
    assert [msa(ack) for ack in acks] == [("AA", f"MSG-{n}") for n in range(5)]
    assert inbox_rows(store) == 5


def test_a_resend_is_acked_aa_again_and_stored_once(listener, send, oru_bytes, store):
    message = oru_bytes("MSG-1")
    first = send(listener.port, message)
    again = send(listener.port, message, message)
    assert [msa(ack) for ack in first + again] == [("AA", "MSG-1")] * 3
    assert inbox_rows(store) == 1


# --- bad input: one table, every row ends in AE/AR or a quarantine reason, and nothing else is lost ---------------


def _edit_lead(message: bytes, sub_id: bytes, payload: bytes | None) -> bytes:
    """The message with the NA OBX at OBX-4 ``sub_id`` given a new OBX-5, or dropped (``None``)."""
    segments = []
    for segment in message.split(b"\r"):
        fields = segment.split(b"|")
        if fields[0] == b"OBX" and fields[2] == b"NA" and fields[4] == sub_id:
            if payload is None:
                continue
            fields[5] = payload
        segments.append(b"|".join(fields))
    return b"\r".join(segments)


def _send_one(port: int, message: bytes) -> tuple[str, str]:
    """Send with python-hl7's client; (MSA-1, MSA-2) of the ACK."""
    with MLLPClient(LOOPBACK, port) as client:
        framed = client.send_message(message)
    return msa(hl7.parse(framed.strip(START_BLOCK + END_BLOCK).decode()))


def _truncated_frame(port: int, oru: Callable[..., bytes]) -> None:
    """The peer disconnects halfway through a frame: no ACK can follow."""
    message = oru("CUT-1")
    with socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S) as connection:
        connection.sendall(START_BLOCK + message[: len(message) // 2])
    return None


def _huge_message(port: int, oru: Callable[..., bytes]) -> tuple[str, str]:
    """Stream a 200 MB message chunk by chunk; stop as soon as the listener answers, and check that was early."""
    header, _, _ = oru("HUGE-1").partition(b"\r")
    chunk = b"1^" * (STREAM_CHUNK_BYTES // 2)
    with socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S) as connection:
        connection.sendall(START_BLOCK + header + b"\rOBX|1|NA|131329^MDC_ECG_ELEC_POTL_I^MDC|1.1|")
        sent_bytes = 0
        while sent_bytes < HUGE_MESSAGE_BYTES and not select.select([connection], [], [], 0)[0]:
            connection.sendall(chunk)
            sent_bytes += len(chunk)
        answer = _read_frame(connection)
    # Refused once past the limit: long before 200 MB (the slack is what the kernel's socket buffers hold).
    assert sent_bytes < HUGE_MESSAGE_BYTES // 4
    return msa(hl7.parse(answer.decode()))


def _read_frame(connection: socket.socket) -> bytes:
    received = b""
    while END_BLOCK not in received:
        chunk = connection.recv(4096)
        assert chunk, "the listener closed the connection without answering"
        received += chunk
    return received.strip(START_BLOCK + END_BLOCK)


def _send_corrupted(corrupt: Callable[[bytes], bytes]) -> Callable[[int, Callable[..., bytes]], tuple[str, str]]:
    return lambda port, oru: _send_one(port, corrupt(oru("BAD-1")))


BAD_INPUT = [
    pytest.param(_truncated_frame, None, "connection closed inside a frame", id="truncated MLLP frame"),
    pytest.param(
        _send_corrupted(lambda oru: b"this is not HL7"), ("AR", ""), "not an HL7 v2 message", id="non-HL7 payload"
    ),
    pytest.param(
        _send_corrupted(lambda oru: oru.replace(b"|ORU^R01^ORU_R01|", b"|ADT^A01^ADT_A01|")),
        ("AR", "BAD-1"),
        "message type 'ADT^A01' is not ORU^R01",
        id="wrong message type",
    ),
    pytest.param(
        _send_corrupted(lambda oru: _edit_lead(oru, b"1.3", b"12^-7^AB^4")),
        ("AE", "BAD-1"),
        "lead III NA values: non-numeric character 'A' in component 3",
        id="letters in an NA OBX",
    ),
    pytest.param(
        _send_corrupted(lambda oru: _edit_lead(oru, b"1.6", None)),
        ("AE", "BAD-1"),
        "11 leads, missing aVF",
        id="11 leads",
    ),
    pytest.param(
        _send_corrupted(lambda oru: _edit_lead(oru, b"1.2", b"1^2^3")),
        ("AE", "BAD-1"),
        "leads of different lengths",
        id="leads of different lengths",
    ),
    pytest.param(
        _send_corrupted(lambda oru: oru.replace(b"MDC_ATTR_SAMP_RATE^MDC|1|500|", b"MDC_ATTR_SAMP_RATE^MDC|1|0|")),
        ("AE", "BAD-1"),
        "sample rate must be positive, got 0 Hz",
        id="fs = 0",
    ),
    pytest.param(
        _huge_message, ("AR", "HUGE-1"), f"frame passed the {TEST_MAX_MESSAGE_BYTES}-byte limit", id="200 MB message"
    ),
]


@pytest.mark.parametrize(("exchange", "expected_ack", "reason"), BAD_INPUT)
def test_bad_input_is_refused_or_quarantined_and_nothing_else_is_lost(
    exchange, expected_ack, reason, start_listener, oru_bytes, store
):
    running = start_listener(max_message_bytes=TEST_MAX_MESSAGE_BYTES)
    assert exchange(running.port, oru_bytes) == expected_ack
    # The listener survives, and the next sender's good message is stored and accepted.
    assert _send_one(running.port, oru_bytes("GOOD-1")) == ("AA", "GOOD-1")
    assert running.listener.is_serving
    [quarantined] = store.list_quarantine(state=QuarantineState.OPEN)
    assert reason in quarantined.entry.reason
    assert quarantined.entry.kind == "hl7_message"
    assert quarantined.entry.origin.startswith("mllp://127.0.0.1:")
    named = expected_ack[1] if expected_ack else "CUT-1"
    expected_ref = f"msh=ECG_CART|CARDIOLOGY|{named}" if named else f"connection={quarantined.entry.origin}#"
    assert quarantined.entry.raw_ref.startswith(expected_ref)
    assert store.get_inbox_message("ECG_CART", "CARDIOLOGY", "GOOD-1") is not None
    assert inbox_rows(store) == 1


def test_a_refusal_names_the_reason_in_an_err_segment(listener, oru_bytes):
    bad = _edit_lead(oru_bytes("BAD-1"), b"1.6", None)
    with MLLPClient(LOOPBACK, listener.port) as client:
        ack = hl7.parse(client.send_message(bad).strip(START_BLOCK + END_BLOCK).decode())
    err = ack.segment("ERR")
    assert str(err[3][0][0]) == "101"  # table 0357: required field missing
    assert str(err[4]) == "E"
    assert "missing aVF" in str(err[8])


# --- TLS ---------------------------------------------------------------------------------------------------------


async def _send_over_tls(port: int, message: bytes, context: ssl.SSLContext) -> tuple[str, str]:
    """python-hl7's asyncio client, over TLS."""
    reader, writer = await open_hl7_connection(LOOPBACK, port, ssl=context, encoding="ascii")
    try:
        writer.writemessage(hl7.parse(message.decode()))
        await writer.drain()
        ack = await asyncio.wait_for(reader.readmessage(), SOCKET_TIMEOUT_S)
    finally:
        writer.close()
        await writer.wait_closed()
    return msa(ack)


def test_tls_listener_accepts_a_client_that_trusts_its_ca(start_listener, tls_files, oru_bytes, store):
    running = start_listener(ssl_context=tls_files.server_context(require_client_cert=False))
    client_context = tls_files.client_context(with_cert=False)
    assert asyncio.run(_send_over_tls(running.port, oru_bytes("TLS-1"), client_context)) == ("AA", "TLS-1")
    assert store.get_inbox_message("ECG_CART", "CARDIOLOGY", "TLS-1") is not None


def test_mutual_tls_listener_accepts_a_client_certificate_from_its_ca(start_listener, tls_files, oru_bytes):
    running = start_listener(ssl_context=tls_files.server_context(require_client_cert=True))
    client_context = tls_files.client_context(with_cert=True)
    assert asyncio.run(_send_over_tls(running.port, oru_bytes("MTLS-1"), client_context)) == ("AA", "MTLS-1")


def test_mutual_tls_listener_turns_away_a_client_without_certificate(start_listener, tls_files, oru_bytes, store):
    running = start_listener(ssl_context=tls_files.server_context(require_client_cert=True))
    client_context = tls_files.client_context(with_cert=False)
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        asyncio.run(_send_over_tls(running.port, oru_bytes("NOCERT-1"), client_context))
    assert store.get_inbox_message("ECG_CART", "CARDIOLOGY", "NOCERT-1") is None
    assert running.listener.is_serving


# --- failures of our own, and idle peers -----------------------------------------------------------------------


def test_when_the_store_fails_the_sender_gets_ae_and_the_listener_keeps_serving(tmp_path, oru_bytes):
    """A real store whose schema was never created: every insert fails, as with a broken database."""
    broken = Store.from_url(f"sqlite:///{tmp_path / 'unmigrated.db'}")

    async def exchange() -> tuple[tuple[str, str], bool]:
        async with MllpListener(broken, MllpListenerConfig(host=LOOPBACK, port=0)) as listener:
            answer = await asyncio.to_thread(_send_one, listener.address[1], oru_bytes("MSG-1"))
            return answer, listener.is_serving

    try:
        assert asyncio.run(exchange()) == (("AE", "MSG-1"), True)
    finally:
        broken.dispose()


def test_an_idle_connection_is_closed_after_the_idle_timeout(start_listener):
    running = start_listener(idle_timeout_s=0.2)
    with socket.create_connection((LOOPBACK, running.port), timeout=SOCKET_TIMEOUT_S) as connection:
        assert connection.recv(1) == b""  # closed by the listener, not by our timeout
    assert running.listener.is_serving

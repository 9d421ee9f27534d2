"""Our MLLP client against python-hl7's asyncio MLLP server (an independent receiver), and against our listener."""

from __future__ import annotations

import socket
import ssl

import pytest

from integrations.hl7 import (
    AckError,
    AckTimeoutError,
    MllpClient,
    MllpConnectionError,
    encode_ecg_oru,
)

LOOPBACK = "127.0.0.1"


def test_send_returns_the_peers_aa_ack_for_our_message(start_peer, python_hl7_ack, oru_bytes):
    peer = start_peer(python_hl7_ack("AA"))
    with MllpClient(LOOPBACK, peer.port) as client:
        ack = client.send(oru_bytes("OUT-1"))
    assert (ack.code, ack.acknowledged_control_id, ack.accepted) == ("AA", "OUT-1", True)
    [received] = peer.received
    assert str(received.segment("MSH")[10]) == "OUT-1"


def test_one_connection_carries_many_messages(start_peer, python_hl7_ack, oru_bytes):
    peer = start_peer(python_hl7_ack("AA"))
    with MllpClient(LOOPBACK, peer.port) as client:
        acks = [client.send(oru_bytes(f"OUT-{n}")) for n in range(3)]
    assert [ack.acknowledged_control_id for ack in acks] == ["OUT-0", "OUT-1", "OUT-2"]
    assert len(peer.connections) == 1


@pytest.mark.parametrize("code", ["AE", "AR"])
def test_a_negative_ack_raises_naming_the_message_and_the_code(start_peer, python_hl7_ack, oru_bytes, code):
    peer = start_peer(python_hl7_ack(code))
    with MllpClient(LOOPBACK, peer.port) as client, pytest.raises(AckError, match=f"'OUT-1'.*answered {code}") as info:
        client.send(oru_bytes("OUT-1"))
    assert info.value.ack_code == code


def test_an_ack_for_another_message_raises(start_peer, oru_bytes):
    peer = start_peer(lambda message: str(message.create_ack("AA")).replace("|OUT-1", "|SOMEONE-ELSE"))
    with MllpClient(LOOPBACK, peer.port) as client, pytest.raises(AckError, match="answers message 'SOMEONE-ELSE'"):
        client.send(oru_bytes("OUT-1"))


def test_no_ack_within_the_timeout_raises_a_timeout(start_peer, oru_bytes):
    peer = start_peer(lambda message: None)
    with MllpClient(LOOPBACK, peer.port, ack_timeout_s=0.3) as client, pytest.raises(AckTimeoutError, match="OUT-1"):
        client.send(oru_bytes("OUT-1"))


def test_the_client_reconnects_after_a_failure(start_peer, python_hl7_ack, oru_bytes):
    answers = iter([None, "AA"])
    peer = start_peer(lambda message: python_hl7_ack(code)(message) if (code := next(answers)) else None)
    # Long enough for python-hl7 to parse and answer a 12-lead ORU on a busy 2-core machine (0.3 s was flaky).
    with MllpClient(LOOPBACK, peer.port, ack_timeout_s=2.0) as client:
        with pytest.raises(AckTimeoutError):
            client.send(oru_bytes("OUT-1"))
        assert client.send(oru_bytes("OUT-2")).code == "AA"
    assert len(peer.connections) == 2


def test_an_unreachable_peer_raises_a_connection_error(oru_bytes):
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        closed_port = probe.getsockname()[1]
    with MllpClient(LOOPBACK, closed_port) as client, pytest.raises(MllpConnectionError, match="cannot connect"):
        client.send(oru_bytes("OUT-1"))


def test_mutual_tls_to_python_hl7(start_peer, python_hl7_ack, tls_files, oru_bytes):
    peer = start_peer(python_hl7_ack("AA"), ssl_context=tls_files.server_context(require_client_cert=True))
    with MllpClient(LOOPBACK, peer.port, ssl_context=tls_files.client_context(with_cert=True)) as client:
        assert client.send(oru_bytes("TLS-OUT-1")).code == "AA"


def test_a_tls_peer_with_an_untrusted_certificate_is_refused(start_peer, python_hl7_ack, tls_files, oru_bytes):
    peer = start_peer(python_hl7_ack("AA"), ssl_context=tls_files.server_context(require_client_cert=False))
    # The system trust store does not know the test CA.
    untrusting = MllpClient(LOOPBACK, peer.port, ssl_context=ssl.create_default_context())
    with untrusting as client, pytest.raises(MllpConnectionError, match="TLS handshake failed"):
        client.send(oru_bytes("TLS-OUT-1"))


def test_our_client_to_our_listener(listener, ecg, store):
    with MllpClient(LOOPBACK, listener.port) as client:
        ack = client.send(encode_ecg_oru(ecg, control_id="LOOP-1"))
    assert ack.code == "AA"
    assert store.get_inbox_message("ECG_CART", "CARDIOLOGY", "LOOP-1") is not None

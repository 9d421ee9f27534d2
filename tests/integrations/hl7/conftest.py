"""Fixtures for the HL7 tests: ECG records, a real SQLite store, our listener in a thread, TLS material.

The listener runs on its own event loop in a background thread, so tests drive it with ordinary
blocking peers (python-hl7's ``MLLPClient``, raw sockets) or with ``asyncio.run`` on their own loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import hl7
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hl7.client import MLLPClient
from hl7.mllp import HL7StreamReader, HL7StreamWriter, start_hl7_server

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.hl7 import MllpListener, MllpListenerConfig, encode_ecg_oru
from integrations.hl7.mllp import END_BLOCK, START_BLOCK
from integrations.store import Store

LOOPBACK = "127.0.0.1"
THREAD_TIMEOUT_S = 10.0


def make_ecg(*, n_samples: int = 50, fs_hz: float = 500.0, seed: int = 0, record_id: str = "ECG-1") -> EcgRecord:
    """A 12-lead record whose samples are whole microvolts, so an encode/decode round trip is exact."""
    rng = np.random.default_rng(seed)
    signal_mv = np.round(rng.normal(0.0, 0.4, size=(len(MODEL_LEAD_ORDER), n_samples)), 3)
    return EcgRecord(
        record_id=record_id,
        signal_mv=signal_mv,
        fs_hz=fs_hz,
        lead_names=MODEL_LEAD_ORDER,
        source="test",
        subject_id="PAT-1",
        acquired_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )


@pytest.fixture
def ecg() -> EcgRecord:
    return make_ecg()


@pytest.fixture
def oru_bytes() -> Callable[..., bytes]:
    """``oru_bytes(control_id, **make_ecg kwargs)``: a small valid ECG ORU^R01."""

    def build(control_id: str = "MSG-1", **kwargs: object) -> bytes:
        return encode_ecg_oru(make_ecg(**kwargs), control_id=control_id)  # type: ignore[arg-type]

    return build


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.from_url(f"sqlite:///{tmp_path / 'hl7.db'}")
    store.upgrade()
    yield store
    store.dispose()


class LoopThread:
    """An asyncio loop in a daemon thread; ``run(coro)`` runs a coroutine there and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(THREAD_TIMEOUT_S)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(THREAD_TIMEOUT_S)
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


@dataclass
class RunningListener:
    listener: MllpListener
    host: str
    port: int


@pytest.fixture
def start_listener(store: Store) -> Iterator[Callable[..., RunningListener]]:
    """``start_listener(inbox=store, **MllpListenerConfig fields)``: our listener on an ephemeral loopback port."""
    loop_thread = LoopThread()
    started: list[MllpListener] = []

    def start(inbox: object = store, **config: object) -> RunningListener:
        listener = MllpListener(inbox, MllpListenerConfig(host=LOOPBACK, port=0, **config))  # type: ignore[arg-type]
        loop_thread.run(listener.start())
        started.append(listener)
        return RunningListener(listener, *listener.address)

    yield start
    for listener in started:
        loop_thread.run(listener.stop())
    loop_thread.close()


@pytest.fixture
def listener(start_listener: Callable[..., RunningListener]) -> RunningListener:
    return start_listener()


def send_with_python_hl7(port: int, *messages: bytes) -> list[hl7.Message]:
    """Send messages over one connection with python-hl7's client; its parse of each ACK."""
    with MLLPClient(LOOPBACK, port) as client:
        return [_parse_ack(client.send_message(message)) for message in messages]


def _parse_ack(framed: bytes) -> hl7.Message:
    assert framed.startswith(START_BLOCK) and framed.endswith(END_BLOCK), framed
    return hl7.parse(framed[1:-2].decode())


@pytest.fixture
def send() -> Callable[..., list[hl7.Message]]:
    return send_with_python_hl7


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self, *, require_client_cert: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca)
        return context

    def client_context(self, *, with_cert: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        if with_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    folder = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test HL7 CA")])
    ca_cert = _certificate(ca_name, ca_key.public_key(), ca_name, ca_key, is_ca=True)
    files = {"ca": _write_pem(folder / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))}
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hl7-{role}")])
        cert = _certificate(name, key.public_key(), ca_name, ca_key, is_ca=False)
        files[f"{role}_cert"] = _write_pem(folder / f"{role}.pem", cert.public_bytes(serialization.Encoding.PEM))
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        files[f"{role}_key"] = _write_pem(folder / f"{role}.key", key_pem)
    return TlsFiles(**files)


def _certificate(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False
        ).add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@dataclass
class Hl7Peer:
    """python-hl7's asyncio MLLP server as an independent receiver; ``reply`` decides each answer.

    ``reply(message)`` returns the ACK text to send, or ``None`` to stay silent.
    """

    port: int
    received: list[hl7.Message]
    connections: list[int]


@pytest.fixture
def python_hl7_ack() -> Callable[[str], Callable[[hl7.Message], str | None]]:
    """``python_hl7_ack(code)``: a reply that answers with python-hl7's own ACK of that code."""
    return lambda code: lambda message: str(message.create_ack(ack_code=code, message_id="PEER-ACK-1"))


@pytest.fixture
def start_peer() -> Iterator[Callable[..., Hl7Peer]]:
    """``start_peer(reply, ssl_context=None)``: python-hl7's server on an ephemeral loopback port."""
    loop_thread = LoopThread()
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[None]] = set()

    def start(reply: Callable[[hl7.Message], str | None], ssl_context: ssl.SSLContext | None = None) -> Hl7Peer:
        peer = Hl7Peer(port=0, received=[], connections=[])

        async def answer(reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
            handlers.add(asyncio.current_task())  # type: ignore[arg-type]
            peer.connections.append(1)
            try:
                while True:
                    message = await reader.readmessage()
                    peer.received.append(message)
                    if (ack := reply(message)) is not None:
                        writer.writeblock(ack.encode())
                        await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass  # the client hung up
            finally:
                writer.close()

        async def serve() -> asyncio.Server:
            return await start_hl7_server(answer, LOOPBACK, 0, ssl=ssl_context)

        server = loop_thread.run(serve())
        servers.append(server)  # type: ignore[arg-type]
        peer.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return peer

    yield start

    async def shut_down() -> None:
        for server in servers:
            server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for server in servers:
            await server.wait_closed()

    loop_thread.run(shut_down())
    loop_thread.close()

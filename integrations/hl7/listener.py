"""The MLLP listener: receive ORU^R01 ECGs, commit them to the inbox, then ACK.

What is checked where (see :mod:`integrations.hl7.ecg_oru`):

* **at receipt**, before any ACK, in a few ms per message: MLLP framing and the size limit (a
  too-large frame is answered ``AR`` and skipped; a truncated one is quarantined), the MSH header
  (not HL7 → ``AR``), message type and version (``AR``), and the waveform's shape — 12 leads,
  sample rate and resolution present and positive, equal lengths, NA values of NM characters
  only (``AE``). A refused message is quarantined (kind ``hl7_message``) and *not* put in the
  inbox, so the sender's corrected resend, with the same MSH-10, is not mistaken for a duplicate.
* **at decode time**, by whoever consumes the inbox (:func:`~integrations.hl7.decode_ecg_oru`):
  hl7apy's strict parse of the structure (segment order, required fields), each sample's number
  syntax, timestamps. Too slow for the ACK path (~20 ms of hl7apy per message).

An accepted message is committed to the inbox before ``AA`` is sent (MSA-2 echoes MSH-10); a
resend of a stored (MSH-3, MSH-4, MSH-10) is answered ``AA`` again and not stored twice. One
connection carries any number of messages. A failure while handling one message is answered,
recorded and logged, and never ends the listener.

**Connections** are bounded: one silent for ``idle_timeout_s`` (between frames or inside one) is
closed, a partial frame quarantined once; beyond ``max_connections`` a new one is closed at once (engines
retry); after ``max_unreadable_frames`` frames in a row without a readable MSH the peer is not speaking
HL7 and is disconnected. A non-loopback address needs TLS unless ``allow_plaintext`` says otherwise.

**Quarantine rows name a stable item**, so a resend or a burst of garbage updates one row instead of
adding thousands: a message with a readable MSH is ``msh=<MSH-3>|<MSH-4>|<MSH-10>``, bytes without one
are the connection's, ``connection=<origin>#<accept time>``. Never the content: it holds PHI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from integrations.addresses import is_loopback_host
from integrations.errors import IntegrationError
from integrations.hl7.ack import build_ack
from integrations.hl7.ecg_oru import scan_ecg_oru
from integrations.hl7.errors import (
    ERR_APPLICATION_INTERNAL,
    FrameTooLargeError,
    Hl7MessageError,
    Hl7ParseError,
    MllpFramingError,
    MllpIdleTimeoutError,
    PlaintextListenerError,
    TruncatedFrameError,
)
from integrations.hl7.message import Hl7Party, MessageHeader, read_header
from integrations.hl7.mllp import DEFAULT_MAX_MESSAGE_BYTES, START_BLOCK, MllpFrameReader, frame
from integrations.store import InboxMessage, QuarantineEntry

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
#: The IANA port for HL7 over MLLP.
DEFAULT_PORT = 2575
DEFAULT_IDENTITY = Hl7Party(application="ECG_AGENT", facility="HOSPITAL")
#: A connection silent this long (between frames or inside one) is closed; engines reconnect on their next message.
DEFAULT_IDLE_TIMEOUT_S = 120.0
#: A hospital has a handful of interface engines; more connections than this are a misbehaving peer.
DEFAULT_MAX_CONNECTIONS = 32
#: Frames in a row without a readable MSH after which the peer is taken not to speak HL7 and disconnected.
DEFAULT_MAX_UNREADABLE_FRAMES = 5
INBOX_SOURCE = "mllp"
QUARANTINE_KIND = "hl7_message"


class InboxStore(Protocol):
    """The two store calls the listener makes (:class:`integrations.store.Store` has them); both block."""

    def add_inbox_message(self, message: InboxMessage) -> bool: ...

    def add_quarantine(self, entry: QuarantineEntry) -> int: ...


@dataclass(frozen=True, slots=True)
class MllpListenerConfig:
    """Where and how to listen. ``port=0`` picks a free port; ``ssl_context`` turns on TLS.

    For mutual TLS, pass a server context with ``verify_mode = ssl.CERT_REQUIRED`` and the
    clients' CA loaded. Without TLS only a loopback ``host`` is allowed, unless ``allow_plaintext``.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    identity: Hl7Party = DEFAULT_IDENTITY
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_unreadable_frames: int = DEFAULT_MAX_UNREADABLE_FRAMES
    allow_plaintext: bool = False
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.idle_timeout_s <= 0 or self.max_connections < 1 or self.max_unreadable_frames < 1:
            raise ValueError("idle_timeout_s, max_connections and max_unreadable_frames must be positive")


@dataclass(slots=True)
class _Peer:
    """One accepted connection: who, since when, and how many unreadable frames it sent in a row."""

    origin: str
    accepted_at: datetime
    unreadable_frames: int = 0

    @property
    def raw_ref(self) -> str:
        """The quarantine key for bytes that name no message: this connection."""
        return f"connection={self.origin}#{self.accepted_at.isoformat(timespec='microseconds')}"


class MllpListener:
    """An asyncio MLLP server in front of an :class:`InboxStore`; ``async with`` starts and stops it."""

    def __init__(self, store: InboxStore, config: MllpListenerConfig = MllpListenerConfig()) -> None:
        self._store = store
        self._config = config
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> MllpListener:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind and listen; :class:`PlaintextListenerError` for a non-loopback address without TLS."""
        self._check_plaintext()
        self._server = await asyncio.start_server(
            self._serve_connection, self._config.host, self._config.port, ssl=self._config.ssl_context
        )
        logger.info("MLLP listener on %s:%d (TLS %s)", *self.address, self._config.ssl_context is not None)

    def _check_plaintext(self) -> None:
        if self._config.ssl_context is not None or is_loopback_host(self._config.host):
            return
        if not self._config.allow_plaintext:
            raise PlaintextListenerError(self._config.host)
        logger.warning(
            "MLLP listener on %r WITHOUT TLS (allow_plaintext): HL7 messages cross the network in clear text; "
            "keep this to a TLS-terminating proxy or an isolated network",
            self._config.host,
        )

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); with ``port=0`` this is where the OS put us."""
        if self._server is None:
            raise RuntimeError("the listener is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def is_serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def stop(self) -> None:
        """Stop accepting, end open connections, and wait for them to finish."""
        if self._server is None:
            return
        self._server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = _Peer(origin=f"mllp://{host}:{port}", accepted_at=datetime.now(UTC))
        if len(self._connections) >= self._config.max_connections:
            logger.warning(
                "MLLP connection from %s refused: %d connections open, the limit (max_connections); "
                "the engine will retry",
                peer.origin,
                len(self._connections),
            )
            writer.close()
            await _closed(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        frames = MllpFrameReader(
            reader,
            origin=peer.origin,
            max_message_bytes=self._config.max_message_bytes,
            idle_timeout_s=self._config.idle_timeout_s,
        )
        try:
            await self._converse(frames, writer, peer)
        except MllpIdleTimeoutError as exc:
            logger.info("MLLP connection %s closed: idle for %g s", peer.origin, exc.idle_timeout_s)
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            logger.info("MLLP connection %s ended: %s", peer.origin, exc)
        except asyncio.CancelledError:
            # stop() ends open connections this way. Returning instead of re-raising keeps asyncio's stream
            # callback (3.11) from logging the cancellation as an error. A message being stored meanwhile
            # gets no ACK: the sender resends it, and the dedupe answers AA.
            logger.info("MLLP connection %s closed by shutdown", peer.origin)
        finally:
            self._connections.discard(task)
            writer.close()
            await _closed(writer)

    async def _converse(self, frames: MllpFrameReader, writer: asyncio.StreamWriter, peer: _Peer) -> None:
        """Answer frames until the peer closes, stalls, or proves it does not speak HL7."""
        while (ack := await self._next_ack(frames, peer)) is not None:
            writer.write(frame(ack))
            # A peer that does not read its ACKs would block us here forever: the idle timeout bounds it.
            await asyncio.wait_for(writer.drain(), self._config.idle_timeout_s)
            if peer.unreadable_frames >= self._config.max_unreadable_frames:
                logger.warning(
                    "MLLP connection %s closed: %d frames in a row without a readable MSH (not HL7)",
                    peer.origin,
                    peer.unreadable_frames,
                )
                return

    async def _next_ack(self, frames: MllpFrameReader, peer: _Peer) -> bytes | None:
        """Read one frame and handle it; the ACK to send, or None when the connection is over."""
        try:
            raw = await frames.read_frame()
        except TruncatedFrameError as exc:  # also a frame stalled mid-way: no ACK can follow either
            await self._quarantine(peer, f"malformed: {exc.reason}", _header_or_none(exc.partial[len(START_BLOCK) :]))
            return None
        except FrameTooLargeError as exc:
            return await self._refuse_frame(peer, exc, exc.head)
        except MllpFramingError as exc:
            return await self._refuse_frame(peer, exc, b"")
        if raw is None:
            return None
        return await asyncio.to_thread(self._receive, raw, peer)

    async def _refuse_frame(self, peer: _Peer, error: MllpFramingError, head: bytes) -> bytes:
        header = _header_or_none(head)
        peer.unreadable_frames = 0 if header else peer.unreadable_frames + 1
        await self._quarantine(peer, f"malformed: {error.reason}", header)
        control_id = header.control_id if header else None
        return build_ack(header, sender=self._config.identity, error=Hl7ParseError(control_id, error.reason))

    def _receive(self, raw: bytes, peer: _Peer) -> bytes:
        """Check, store and answer one message (blocking: runs in a worker thread)."""
        try:
            return self._accept(raw, peer)
        except Exception as exc:  # the per-message boundary: any failure is answered AE, the listener lives on
            logger.exception("could not handle a message from %s", peer.origin)
            header = _header_or_none(raw)
            reason = f"not stored, internal error ({type(exc).__name__}); please resend"
            error = Hl7MessageError(header.control_id if header else None, reason, error_code=ERR_APPLICATION_INTERNAL)
            return build_ack(header, sender=self._config.identity, error=error)

    def _accept(self, raw: bytes, peer: _Peer) -> bytes:
        header: MessageHeader | None = None
        try:
            header = read_header(raw)
            scan_ecg_oru(raw)
        except Hl7MessageError as exc:
            peer.unreadable_frames = 0 if header else peer.unreadable_frames + 1
            self._store.add_quarantine(_quarantine_entry(peer, exc.quarantine_reason, header))
            logger.warning("refused %s from %s: %s", exc.control_id, peer.origin, exc.reason)
            return build_ack(header, sender=self._config.identity, error=exc)
        peer.unreadable_frames = 0
        is_new = self._store.add_inbox_message(_inbox_message(header, raw))
        logger.info("%s %s from %s", "stored" if is_new else "duplicate", header.control_id, peer.origin)
        return build_ack(header, sender=self._config.identity)

    async def _quarantine(self, peer: _Peer, reason: str, header: MessageHeader | None) -> None:
        """Record a frame we could not take; a store failure here is logged, the peer has its answer anyway."""
        entry = _quarantine_entry(peer, reason, header)
        try:
            await asyncio.to_thread(self._store.add_quarantine, entry)
        except IntegrationError:
            logger.exception("could not quarantine a frame from %s (%s)", peer.origin, reason)
            return
        logger.warning("quarantined from %s: %s", peer.origin, reason)


def _inbox_message(header: MessageHeader, raw: bytes) -> InboxMessage:
    return InboxMessage(
        source=INBOX_SOURCE,
        sender_application=header.sender.application,
        sender_facility=header.sender.facility,
        control_id=header.control_id,
        message_type=header.message_type,
        raw=raw,
    )


def _quarantine_entry(peer: _Peer, reason: str, header: MessageHeader | None) -> QuarantineEntry:
    """A quarantine row for the message its MSH names, or else for the connection (see the module docstring)."""
    return QuarantineEntry(
        kind=QUARANTINE_KIND, origin=peer.origin, reason=reason, raw_ref=_quarantine_ref(header, peer)
    )


def _quarantine_ref(header: MessageHeader | None, peer: _Peer) -> str:
    """``msh=<MSH-3>|<MSH-4>|<MSH-10>`` (the dedupe key: a resend is the same item), else the connection."""
    if header is None:
        return peer.raw_ref
    return f"msh={header.sender.application}|{header.sender.facility}|{header.control_id}"


def _header_or_none(raw: bytes) -> MessageHeader | None:
    try:
        return read_header(raw)
    except Hl7MessageError:
        return None


async def _closed(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):  # the peer went first; closed either way
        await writer.wait_closed()

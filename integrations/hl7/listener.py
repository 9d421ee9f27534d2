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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from dataclasses import dataclass, field
from typing import Protocol

from integrations.errors import IntegrationError
from integrations.hl7.ack import build_ack
from integrations.hl7.ecg_oru import scan_ecg_oru
from integrations.hl7.errors import (
    ERR_APPLICATION_INTERNAL,
    FrameTooLargeError,
    Hl7MessageError,
    Hl7ParseError,
    MllpFramingError,
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
#: A connection with nothing to say for this long is closed; engines reconnect on their next message.
DEFAULT_IDLE_TIMEOUT_S = 300.0
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
    clients' CA loaded.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    identity: Hl7Party = DEFAULT_IDENTITY
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)


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
        self._server = await asyncio.start_server(
            self._serve_connection, self._config.host, self._config.port, ssl=self._config.ssl_context
        )
        logger.info("MLLP listener on %s:%d (TLS %s)", *self.address, self._config.ssl_context is not None)

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
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        host, port = writer.get_extra_info("peername")[:2]
        origin = f"mllp://{host}:{port}"
        frames = MllpFrameReader(reader, origin=origin, max_message_bytes=self._config.max_message_bytes)
        try:
            while (ack := await self._next_ack(frames, origin)) is not None:
                writer.write(frame(ack))
                await writer.drain()
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            logger.info("MLLP connection %s ended: %s", origin, exc)
        except asyncio.CancelledError:
            # stop() ends open connections this way. Returning instead of re-raising keeps asyncio's stream
            # callback (3.11) from logging the cancellation as an error. A message being stored meanwhile
            # gets no ACK: the sender resends it, and the dedupe answers AA.
            logger.info("MLLP connection %s closed by shutdown", origin)
        finally:
            self._connections.discard(task)
            writer.close()
            await _closed(writer)

    async def _next_ack(self, frames: MllpFrameReader, origin: str) -> bytes | None:
        """Read one frame and handle it; the ACK to send, or None when the connection is over."""
        try:
            raw = await asyncio.wait_for(frames.read_frame(), self._config.idle_timeout_s)
        except TruncatedFrameError as exc:
            header = _header_or_none(exc.partial[len(START_BLOCK) :])
            await self._quarantine(origin, exc.reason, exc.partial, header.control_id if header else None)
            return None
        except FrameTooLargeError as exc:
            return await self._refuse_frame(origin, exc, exc.head)
        except MllpFramingError as exc:
            return await self._refuse_frame(origin, exc, b"")
        if raw is None:
            return None
        return await asyncio.to_thread(self._receive, raw, origin)

    async def _refuse_frame(self, origin: str, error: MllpFramingError, head: bytes) -> bytes:
        header = _header_or_none(head)
        control_id = header.control_id if header else None
        await self._quarantine(origin, error.reason, head, control_id)
        return build_ack(header, sender=self._config.identity, error=Hl7ParseError(control_id, error.reason))

    def _receive(self, raw: bytes, origin: str) -> bytes:
        """Check, store and answer one message (blocking: runs in a worker thread)."""
        try:
            return self._accept(raw, origin)
        except Exception as exc:  # the per-message boundary: any failure is answered AE, the listener lives on
            logger.exception("could not handle a message from %s", origin)
            header = _header_or_none(raw)
            reason = f"not stored, internal error ({type(exc).__name__}); please resend"
            error = Hl7MessageError(header.control_id if header else None, reason, error_code=ERR_APPLICATION_INTERNAL)
            return build_ack(header, sender=self._config.identity, error=error)

    def _accept(self, raw: bytes, origin: str) -> bytes:
        header: MessageHeader | None = None
        try:
            header = read_header(raw)
            scan_ecg_oru(raw)
        except Hl7MessageError as exc:
            self._store.add_quarantine(_quarantine_entry(origin, exc.reason, raw, exc.control_id))
            logger.warning("refused %s from %s: %s", exc.control_id, origin, exc.reason)
            return build_ack(header, sender=self._config.identity, error=exc)
        is_new = self._store.add_inbox_message(_inbox_message(header, raw))
        logger.info("%s %s from %s", "stored" if is_new else "duplicate", header.control_id, origin)
        return build_ack(header, sender=self._config.identity)

    async def _quarantine(self, origin: str, reason: str, raw: bytes, control_id: str | None) -> None:
        """Record a frame we could not take; a store failure here is logged, the peer has its answer anyway."""
        entry = _quarantine_entry(origin, reason, raw, control_id)
        try:
            await asyncio.to_thread(self._store.add_quarantine, entry)
        except IntegrationError:
            logger.exception("could not quarantine a frame from %s (%s)", origin, reason)
            return
        logger.warning("quarantined from %s: %s", origin, reason)


def _inbox_message(header: MessageHeader, raw: bytes) -> InboxMessage:
    return InboxMessage(
        source=INBOX_SOURCE,
        sender_application=header.sender.application,
        sender_facility=header.sender.facility,
        control_id=header.control_id,
        message_type=header.message_type,
        raw=raw,
    )


def _quarantine_entry(origin: str, reason: str, raw: bytes, control_id: str | None) -> QuarantineEntry:
    """A quarantine row naming the message by MSH-10 and content hash (never by content: it holds PHI)."""
    digest = hashlib.sha256(raw).hexdigest()
    raw_ref = f"msh10={control_id or ''};sha256={digest};bytes={len(raw)}"
    return QuarantineEntry(kind=QUARANTINE_KIND, origin=origin, reason=reason, raw_ref=raw_ref)


def _header_or_none(raw: bytes) -> MessageHeader | None:
    try:
        return read_header(raw)
    except Hl7MessageError:
        return None


async def _closed(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):  # the peer went first; closed either way
        await writer.wait_closed()

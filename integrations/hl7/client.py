"""A blocking MLLP client: send one message, wait for its ACK, check it.

Blocking on purpose: its callers (the nightly batch's write-back) are synchronous; run it in a
thread from asyncio code. One connection is kept open across messages and reopened after any
failure, so a broken connection costs one error, not the rest of the batch.
"""

from __future__ import annotations

import socket
import ssl
import time

from integrations.hl7.ack import Ack, check_ack, parse_ack
from integrations.hl7.errors import AckTimeoutError, MllpConnectionError
from integrations.hl7.message import read_header
from integrations.hl7.mllp import END_BLOCK, START_BLOCK, frame

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_ACK_TIMEOUT_S = 30.0
#: An ACK is a few hundred bytes; more than this without an end block is not an ACK.
MAX_ACK_BYTES = 1024 * 1024
_RECV_BYTES = 4096


class MllpClient:
    """Sends HL7 messages to ``host:port`` over MLLP (TLS when ``ssl_context`` is given)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
    ) -> None:
        self._address = (host, port)
        self._peer = f"mllp://{host}:{port}"
        self._ssl_context = ssl_context
        self._connect_timeout_s = connect_timeout_s
        self._ack_timeout_s = ack_timeout_s
        self._socket: socket.socket | None = None

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def send(self, message: bytes) -> Ack:
        """Send ``message`` and return the peer's ACK, which must be ``AA`` (or ``CA``) for its MSH-10.

        Raises :class:`AckTimeoutError` when no complete ACK arrives within ``ack_timeout_s``,
        :class:`MllpConnectionError` when the connection fails, :class:`AckError` for a negative
        ACK or one answering another message.
        """
        control_id = read_header(message).control_id
        try:
            return self._exchange(message, control_id)
        except BaseException:
            # After any failure the stream may be out of step (a late ACK still in flight): start afresh.
            self.close()
            raise

    def _exchange(self, message: bytes, control_id: str) -> Ack:
        connection = self._connected(control_id)
        deadline = time.monotonic() + self._ack_timeout_s
        try:
            connection.settimeout(self._ack_timeout_s)
            connection.sendall(frame(message))
            raw_ack = self._receive_frame(connection, deadline, control_id)
        except TimeoutError as exc:
            raise AckTimeoutError(self._peer, control_id, f"no ACK within {self._ack_timeout_s} s") from exc
        except OSError as exc:
            raise MllpConnectionError(self._peer, control_id, f"connection failed: {exc}") from exc
        ack = parse_ack(raw_ack, control_id=control_id)
        check_ack(ack, control_id=control_id)
        return ack

    def _connected(self, control_id: str) -> socket.socket:
        if self._socket is None:
            try:
                plain = socket.create_connection(self._address, timeout=self._connect_timeout_s)
            except OSError as exc:
                raise MllpConnectionError(self._peer, control_id, f"cannot connect: {exc}") from exc
            try:
                self._socket = self._secured(plain)
            except OSError as exc:  # ssl.SSLError is an OSError
                plain.close()
                raise MllpConnectionError(self._peer, control_id, f"TLS handshake failed: {exc}") from exc
        return self._socket

    def _secured(self, plain: socket.socket) -> socket.socket:
        if self._ssl_context is None:
            return plain
        return self._ssl_context.wrap_socket(plain, server_hostname=self._address[0])

    def _receive_frame(self, connection: socket.socket, deadline: float, control_id: str) -> bytes:
        """Bytes of one MLLP frame; the time left to the deadline bounds every read."""
        received = bytearray()
        while (end := received.find(END_BLOCK)) < 0:
            if len(received) > MAX_ACK_BYTES:
                raise MllpConnectionError(self._peer, control_id, f"answer over {MAX_ACK_BYTES} bytes, not an ACK")
            connection.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = connection.recv(_RECV_BYTES)
            if not chunk:
                raise MllpConnectionError(self._peer, control_id, "connection closed before the ACK")
            received.extend(chunk)
        block = bytes(received[:end])
        if not block.startswith(START_BLOCK):
            raise MllpConnectionError(self._peer, control_id, "the answer is not MLLP-framed")
        return block[len(START_BLOCK) :]

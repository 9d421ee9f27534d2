"""MLLP framing: ``0x0B`` + message + ``0x1C 0x0D``, read from an asyncio stream with a size limit.

The reader never holds more than the size limit plus one read chunk: a frame that passes the
limit is reported at once (:class:`FrameTooLargeError`), and its remainder is then skipped as it
streams in, so the connection can carry on with the next frame.

With an idle timeout, every read waits at most that long: a peer silent between frames ends the
connection (:class:`MllpIdleTimeoutError`), one silent inside a frame ends it with what had
arrived (:class:`StalledFrameError`), so a stalled peer cannot hold a connection open forever.
Error reasons name no byte counts: they are part of the quarantine key and must repeat exactly.
"""

from __future__ import annotations

import asyncio

from integrations.hl7.errors import (
    FrameTooLargeError,
    MllpFramingError,
    MllpIdleTimeoutError,
    StalledFrameError,
    TruncatedFrameError,
)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
#: 16 MiB: a 12-lead, 10 s, 1 kHz ORU is about 1 MB; anything this large is a mistake or an attack.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
#: Bytes of a too-large frame kept to read its MSH (for MSA-2) and the quarantine reference.
_HEAD_BYTES = 1024
#: Some senders put a line break between frames; it is not an error.
_INTER_FRAME_WHITESPACE = b"\r\n \t"


def frame(message: bytes) -> bytes:
    """``message`` wrapped for MLLP."""
    return START_BLOCK + message + END_BLOCK


class MllpFrameReader:
    """Successive MLLP frames from one connection; ``origin`` names the peer in errors.

    ``idle_timeout_s`` bounds each wait for bytes (None: wait forever).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        *,
        origin: str,
        max_message_bytes: int,
        idle_timeout_s: float | None = None,
    ) -> None:
        self._reader = reader
        self._origin = origin
        self._max_message_bytes = max_message_bytes
        self._idle_timeout_s = idle_timeout_s
        self._buffer = bytearray()
        self._scanned_bytes = 0  # how much of the buffer is known to hold no end block
        self._skipping = False

    async def read_frame(self) -> bytes | None:
        """The next message, without its framing; ``None`` when the peer has closed between frames.

        Raises :class:`FrameTooLargeError` (the rest of that frame is skipped on the next call),
        :class:`TruncatedFrameError` (EOF inside a frame), :class:`StalledFrameError` (silence inside
        a frame), :class:`MllpIdleTimeoutError` (silence between frames) or :class:`MllpFramingError`
        (a frame without a start block, consumed up to its end block).
        """
        if self._skipping and not await self._skip_frame():
            return None
        while True:
            self._drop_leading_whitespace()
            end = self._buffer.find(END_BLOCK, self._scanned_bytes)
            self._scanned_bytes = 0 if end >= 0 else max(len(self._buffer) - 1, 0)
            if end > self._max_message_bytes + len(START_BLOCK):
                raise self._too_large(consumed=end + len(END_BLOCK))
            if end >= 0:
                return self._take(end)
            if len(self._buffer) > self._max_message_bytes + len(START_BLOCK):
                self._skipping = True
                raise self._too_large(consumed=len(self._buffer))
            if not await self._fill():
                return self._at_eof()

    def _too_large(self, *, consumed: int) -> FrameTooLargeError:
        """Drop ``consumed`` bytes of an oversized frame, keeping its head (for MSH-10) in the error."""
        head = bytes(self._buffer[len(START_BLOCK) : len(START_BLOCK) + _HEAD_BYTES])
        del self._buffer[:consumed]
        self._scanned_bytes = 0
        return FrameTooLargeError(self._origin, f"frame passed the {self._max_message_bytes}-byte limit", head=head)

    def _drop_leading_whitespace(self) -> None:
        count = 0
        while count < len(self._buffer) and self._buffer[count] in _INTER_FRAME_WHITESPACE:
            count += 1
        if count:
            del self._buffer[:count]
            self._scanned_bytes = 0

    def _take(self, end: int) -> bytes:
        block = bytes(self._buffer[:end])
        del self._buffer[: end + len(END_BLOCK)]
        if not block.startswith(START_BLOCK):
            raise MllpFramingError(self._origin, "a frame without the 0x0B start block")
        return block[len(START_BLOCK) :]

    def _at_eof(self) -> None:
        if self._buffer:
            partial = bytes(self._buffer)
            self._buffer.clear()
            raise TruncatedFrameError(self._origin, "connection closed inside a frame", partial=partial)
        return None

    async def _fill(self) -> bool:
        """Read one chunk into the buffer; False at EOF."""
        try:
            async with asyncio.timeout(self._idle_timeout_s):  # no task per read, unlike wait_for
                chunk = await self._reader.read(READ_CHUNK_BYTES)
        except TimeoutError:
            raise self._silence() from None
        self._buffer.extend(chunk)
        return bool(chunk)

    def _silence(self) -> MllpIdleTimeoutError | StalledFrameError:
        """The error for a read that timed out: inside a frame we had started reading, or between frames."""
        assert self._idle_timeout_s is not None
        if self._skipping or not self._buffer:  # the rest of a too-large frame was already reported
            return MllpIdleTimeoutError(self._origin, self._idle_timeout_s)
        partial = bytes(self._buffer)
        self._buffer.clear()
        reason = f"nothing received inside a frame for {self._idle_timeout_s:g} s"
        return StalledFrameError(self._origin, reason, partial=partial)

    async def _skip_frame(self) -> bool:
        """Drop bytes up to the end of the too-large frame; False if the peer closed first."""
        while True:
            end = self._buffer.find(END_BLOCK)
            if end >= 0:
                del self._buffer[: end + len(END_BLOCK)]
                self._skipping = False
                return True
            # Keep the last byte: it may be the 0x1C of an end block split across reads.
            del self._buffer[: max(len(self._buffer) - 1, 0)]
            if not await self._fill():
                self._buffer.clear()
                return False

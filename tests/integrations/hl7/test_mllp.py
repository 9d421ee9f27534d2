"""MLLP framing on an asyncio stream: frames split anywhere, size limit, truncation, missing start block."""

from __future__ import annotations

import asyncio

import pytest

from integrations.hl7 import FrameTooLargeError, MllpFramingError, TruncatedFrameError
from integrations.hl7.mllp import MllpFrameReader, frame


async def _frames(data: bytes, *, chunk_bytes: int, max_message_bytes: int = 1000) -> list[bytes | str]:
    """Every frame (or error class name) the reader yields when ``data`` arrives in ``chunk_bytes`` pieces."""
    stream = asyncio.StreamReader()
    for start in range(0, len(data), chunk_bytes):
        stream.feed_data(data[start : start + chunk_bytes])
    stream.feed_eof()
    reader = MllpFrameReader(stream, origin="test", max_message_bytes=max_message_bytes)
    results: list[bytes | str] = []
    while True:
        try:
            message = await reader.read_frame()
        except MllpFramingError as exc:
            results.append(type(exc).__name__)
            continue
        if message is None:
            return results
        results.append(message)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 7, 4096])
def test_frames_split_anywhere_across_reads_come_out_whole(chunk_bytes):
    data = frame(b"MSH|first") + b"\r\n" + frame(b"MSH|second")
    assert asyncio.run(_frames(data, chunk_bytes=chunk_bytes)) == [b"MSH|first", b"MSH|second"]


@pytest.mark.parametrize("chunk_bytes", [1, 3, 64])
def test_a_too_large_frame_is_reported_then_skipped(chunk_bytes):
    data = frame(b"x" * 50) + frame(b"MSH|after")
    frames = asyncio.run(_frames(data, chunk_bytes=chunk_bytes, max_message_bytes=20))
    assert frames == ["FrameTooLargeError", b"MSH|after"]


def test_the_too_large_error_keeps_the_head_for_msh10():
    async def first_error() -> FrameTooLargeError:
        stream = asyncio.StreamReader()
        stream.feed_data(frame(b"MSH|^~\\&|A|" + b"9" * 100))
        reader = MllpFrameReader(stream, origin="test", max_message_bytes=20)
        with pytest.raises(FrameTooLargeError) as info:
            await reader.read_frame()
        return info.value

    assert asyncio.run(first_error()).head.startswith(b"MSH|^~\\&|A|")


def test_eof_inside_a_frame_is_a_truncation():
    assert asyncio.run(_frames(frame(b"MSH|ok") + b"\x0bMSH|cut", chunk_bytes=5)) == [
        b"MSH|ok",
        TruncatedFrameError.__name__,
    ]


def test_a_frame_without_start_block_is_refused_and_the_stream_goes_on():
    assert asyncio.run(_frames(b"MSH|bare\x1c\x0d" + frame(b"MSH|ok"), chunk_bytes=4)) == [
        MllpFramingError.__name__,
        b"MSH|ok",
    ]

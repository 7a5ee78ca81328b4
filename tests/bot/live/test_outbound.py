"""The input send policy: spurt edges and control messages at once, the middle of a spurt in chunks, nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from bot.live.buffers import Outgoing
from bot.live.connection import Connection
from bot.live.options import LiveConnectOptions, LiveCounters
from bot.live.outbound import Outbound

FRAME = 640  # 20 ms of 16 kHz mono s16le


class RecordingSession:
    """A genai AsyncSession that records what it was asked to send and when."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str, int]] = []  # (monotonic time, kind, audio bytes)

    async def send_realtime_input(self, *, audio=None, audio_stream_end=None, text=None) -> None:
        if audio is not None:
            self.sent.append((time.monotonic(), "audio", len(audio.data)))
        elif audio_stream_end:
            self.sent.append((time.monotonic(), "audio_end", 0))
        else:
            self.sent.append((time.monotonic(), "text", 0))

    def sizes(self) -> list[tuple[str, int]]:
        return [(kind, size) for _, kind, size in self.sent]


@contextlib.asynccontextmanager
async def sender(chunk_ms: float = 100.0):
    outbound = Outbound(LiveConnectOptions(input_chunk_ms=chunk_ms), LiveCounters())
    session = RecordingSession()
    task = asyncio.create_task(outbound.run(Connection(1, session, contextlib.AsyncExitStack(), resumed=False)))
    try:
        yield outbound, session
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def frame(fill: int = 1) -> Outgoing:
    return Outgoing("audio", audio=bytes([fill]) * FRAME)


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_the_first_frame_of_a_spurt_goes_at_once_and_the_middle_in_chunks():
    """Urgent onset alone, then five held frames leave as one 100 ms message when the fifth arrives."""
    async with sender() as (outbound, session):
        outbound.push(frame(), urgent=True)
        await settle()
        assert session.sizes() == [("audio", FRAME)]
        for _ in range(4):
            outbound.push(frame())
            await settle()
        assert session.sizes() == [("audio", FRAME)]  # 80 ms held
        outbound.push(frame())
        await settle()
        assert session.sizes() == [("audio", FRAME), ("audio", 5 * FRAME)]


async def test_the_end_of_a_spurt_flushes_what_is_held_at_once():
    """An urgent last frame takes the held middle with it, in one message, without waiting."""
    async with sender() as (outbound, session):
        outbound.push(frame(), urgent=True)
        await settle()
        outbound.push(frame())
        outbound.push(frame())
        await settle()
        outbound.push(frame(), urgent=True)
        await settle()
        assert session.sizes() == [("audio", FRAME), ("audio", 3 * FRAME)]


async def test_audio_stream_end_and_text_go_at_once_after_the_audio_before_them():
    """A control message never waits for a chunk to fill, and never overtakes the audio queued before it."""
    async with sender() as (outbound, session):
        outbound.push(frame())
        outbound.push(frame())
        outbound.push(Outgoing("audio_end"))
        await settle()
        outbound.push(Outgoing("text", text="hi"))
        await settle()
        assert session.sizes() == [("audio", 2 * FRAME), ("audio_end", 0), ("text", 0)]


async def test_held_audio_never_waits_longer_than_one_chunk():
    """If no more frames come (a stalled pump), what is held goes when its oldest frame has waited a chunk."""
    async with sender(chunk_ms=60) as (outbound, session):
        queued_at = time.monotonic()
        outbound.push(frame())
        await asyncio.sleep(0.02)
        assert session.sent == []
        async with asyncio.timeout(2.0):  # a loaded machine wakes late; what matters is that it goes, once
            while not session.sent:
                await asyncio.sleep(0.01)
        assert session.sizes() == [("audio", FRAME)]
        assert session.sent[0][0] - queued_at >= 0.055


async def test_a_20ms_chunk_sends_every_frame_on_its_own():
    """input_chunk_ms=20 is the old policy: one message per frame, nothing held."""
    async with sender(chunk_ms=20) as (outbound, session):
        for _ in range(3):
            outbound.push(frame())
            await settle()
        assert session.sizes() == [("audio", FRAME)] * 3


async def test_audio_held_when_the_socket_drops_is_sent_on_the_next_connection():
    """Held audio is unsent input: a new sender (the reconnect) sends every byte of it."""
    outbound = Outbound(LiveConnectOptions(), LiveCounters())
    first, second = RecordingSession(), RecordingSession()
    task = asyncio.create_task(outbound.run(Connection(1, first, contextlib.AsyncExitStack(), resumed=False)))
    outbound.push(frame(), urgent=True)
    await settle()
    outbound.push(frame(2))
    outbound.push(frame(3))
    await settle()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert first.sizes() == [("audio", FRAME)]
    outbound.requeue_unconfirmed(resumed=True, last_turn_complete_at=0.0)  # replays the onset frame too
    task = asyncio.create_task(outbound.run(Connection(2, second, contextlib.AsyncExitStack(), resumed=True)))
    await settle()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert sum(size for _, size in second.sizes()) == 3 * FRAME  # replayed onset + both held frames, at once


@pytest.mark.parametrize("chunk_ms", [10, 2000])
def test_chunk_sizes_outside_one_frame_to_a_second_are_refused(chunk_ms):
    """input_chunk_ms must be 20–1000."""
    with pytest.raises(ValueError):
        LiveConnectOptions(input_chunk_ms=chunk_ms)

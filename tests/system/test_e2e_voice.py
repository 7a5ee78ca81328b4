"""The whole path with nothing faked but Discord's servers and Google's:

DAVE-encrypted RTP over loopback UDP → voice-recv + the DAVE shim → Opus decode → TutorSink → mixer →
LiveSession (real google-genai SDK) → fake Live server → reply → PlaybackSource → discord.py's own
AudioPlayer thread → Opus encode → DAVE encrypt → UDP back out, where the remote kid's own DAVE session
decrypts what the bot said.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

import bot.audio.dave.receive
import bot.conversation
import bot.voice_link
from bot.conversation import Conversation
from bot.levels import BUILTIN_LEVELS
from bot.live.session import LiveConnectOptions, LiveSession
from bot.tutor import Conversations, StartRequest
from tests.dave_harness import GUILD_ID, SPEAKER_ID, VoiceServerHarness, encode_opus, sine_frames
from tests.fake_live import FakeLiveServer, make_client_settings
from tests.signals import peak_frequency

FAST = LiveConnectOptions(max_retries=2, first_retry_delay=0.01, max_retry_delay=0.05)


@pytest.fixture
async def harness(monkeypatch):
    monkeypatch.setattr(bot.audio.dave.receive, "KEEPALIVE_SECONDS", 0.05)  # so its thread notices the stop quickly
    h = await VoiceServerHarness.start()
    yield h
    await h.close()
    # voice-recv's keepalive thread holds the reader → sink → conversation → soxr streams; let it end now,
    # or nanobind reports the streams as leaked at interpreter exit.
    for thread in threading.enumerate():
        if thread.name.startswith("voice-udp-keepalive"):
            await asyncio.to_thread(thread.join, 2.0)
    gc.collect()


@contextlib.asynccontextmanager
async def tutoring(harness: VoiceServerHarness, repository, monkeypatch) -> AsyncIterator[
        tuple[FakeLiveServer, Conversations, Conversation]]:
    """A conversation on the harness's call, talking to a fake Live server (no greeting: exact turns are counted)."""
    # Leaving is bounded in production; here the harness answers at once, keep the bound short anyway.
    monkeypatch.setattr(bot.voice_link, "VOICE_DISCONNECT_TIMEOUT_S", 0.2)
    async with FakeLiveServer(think_time=0.05, reply_audio_ms=600) as live_server:
        settings = make_client_settings(live_server, monkeypatch)

        async def connect(channel):
            return harness.vc

        conversations = Conversations(settings=settings, repository=repository, connect=connect,
                                      live_factory=functools.partial(LiveSession, connect_options=FAST))
        conversation = await conversations.start(StartRequest(
            guild_id=GUILD_ID, voice_channel=harness.channel, starter_id=SPEAKER_ID, starter_name="Kid",
            level=BUILTIN_LEVELS["space"], age=8, greet=False))
        yield live_server, conversations, conversation


async def test_a_kid_speaks_through_dave_and_hears_the_tutor(harness, repository, monkeypatch):
    """Real DAVE in, real DAVE out: the Live server hears the kid, the kid's client decodes the tutor's tone."""
    async with tutoring(harness, repository, monkeypatch) as (live_server, conversations, conversation):
        opus = encode_opus(sine_frames(50, freq=300.0, amplitude=8000))  # one second of a kid's "voice"
        await harness.send_paced((harness.speaker.frame(f) for f in opus), pace=0.02)
        await live_server.wait_for(lambda: live_server.current.audio_stream_ends >= 1, within=10)
        heard = np.frombuffer(bytes(live_server.current.audio), "<i2")
        assert len(heard) >= 16_000 * 0.8  # most of the second reached Live as 16 kHz mono
        assert abs(peak_frequency(heard[: 16_000], 16_000) - 300) < 10

        async with asyncio.timeout(10):
            while conversation.status().turns < 2:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the player thread plays the 0.6 s reply in real time
        status = conversation.status()
        assert status.packets_received >= 45 and status.packets_dropped == 0
        await conversations.stop(GUILD_ID)

        pcm = b"".join(harness.bot_said(harness.speaker))
        left = np.frombuffer(pcm, "<i2")[0::2]
        loud = left[np.abs(left) > 2000]
        assert len(loud) > 48_000 * 0.3, "the tutor's reply never reached the kid"
        assert abs(peak_frequency(left, 48_000) - 440) < 15  # the fake model speaks a 440 Hz tone
        turns = await repository.get_turns(GUILD_ID, conversation.session_id)
        assert [t.role for t in turns] == ["child", "tutor"] and turns[0].speaker_id == SPEAKER_ID


async def test_the_tutor_keeps_hearing_and_answering_when_the_call_moves(harness, repository, monkeypatch):
    """A voice server move between two questions: the second still reaches Live, its answer still reaches the
    kid (through the new server, encrypted for the new DAVE group), and both exchanges are stored."""
    async with tutoring(harness, repository, monkeypatch) as (live_server, conversations, conversation):
        async def ask(freq: float, answers: int) -> np.ndarray:
            """One second of the kid's voice; returns what Live heard of it once the tutor has answered."""
            start = len(live_server.current.audio)
            opus = encode_opus(sine_frames(50, freq=freq, amplitude=8000))
            await harness.send_paced((harness.speaker.frame(f) for f in opus), pace=0.02)
            await live_server.wait_for(lambda: live_server.current.audio_stream_ends >= answers, within=10)
            async with asyncio.timeout(10):
                while conversation.status().turns < 2 * answers:
                    await asyncio.sleep(0.05)
            return np.frombuffer(bytes(live_server.current.audio)[start:], "<i2")

        first = await ask(300.0, 1)
        assert abs(peak_frequency(first[:16_000], 16_000) - 300) < 10
        await asyncio.sleep(1.0)  # the first answer plays out
        await harness.move()
        second = await ask(500.0, 2)
        assert len(second) >= 16_000 * 0.8 and abs(peak_frequency(second[:16_000], 16_000) - 500) < 10
        await asyncio.sleep(1.0)  # the second answer plays, through the new voice server
        await conversations.stop(GUILD_ID)

        left = np.frombuffer(b"".join(harness.bot_said(harness.speaker)), "<i2")[0::2]
        assert len(left[np.abs(left) > 2000]) > 48_000 * 0.3, "the answer after the move never reached the kid"
        assert abs(peak_frequency(left, 48_000) - 440) < 15
        turns = await repository.get_turns(GUILD_ID, conversation.session_id)
        assert [t.role for t in turns] == ["child", "tutor", "child", "tutor"]

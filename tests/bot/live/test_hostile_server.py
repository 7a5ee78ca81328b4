"""A newer or misbehaving Live server cannot break a conversation (real SDK against a hostile fake)."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import math
import time

import numpy as np
import pytest
from google.genai import types

from bot.live.buffers import MAX_SEED_CHARS, MAX_SEED_TURNS, HistoryTurn
from bot.live.events import AudioChunk, Failed, Interrupted, Reconnecting, TurnComplete, TurnTranscribed
from bot.live.frames import frame_shim_problems, parse_frame
from bot.live.session import LiveConnectFailed, LiveConnectOptions, LiveSession
from tests.bot.live.conftest import FAST, Collector
from tests.fake_live import FakeLiveServer, tone

UNREADABLE = {
    "not-json": "}{ this is not JSON",
    "json-list": "[1, 2, 3]",
    "unknown-keys": json.dumps({"error": {"code": 500, "message": "boom"}}),
    "null-only": json.dumps({"serverContent": None, "usageMetadata": None}),
    "newer-field-only": json.dumps({"someFieldFrom2027": {"x": 1}}),
    "wrong-type": json.dumps({"usageMetadata": {"totalTokenCount": "lots"}}),
}


def test_the_frame_shim_still_fits_the_sdk():
    """The SDK internals `bot.live.frames` reads are all still there."""
    assert frame_shim_problems() == []


@pytest.mark.parametrize("frame", [
    {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000",
                                                               "data": base64.b64encode(b"\x01\x02").decode()}}]},
                       "outputTranscription": {"text": "Hi"}, "turnComplete": True},
     "usageMetadata": {"totalTokenCount": 7}},
    {"sessionResumptionUpdate": {"newHandle": "h-1", "resumable": True}},
    {"goAway": {"timeLeft": "60s"}},
    {"toolCall": {"functionCalls": [{"id": "c", "name": "f", "args": {}}]}},
    {},
])
def test_a_readable_frame_reads_exactly_as_the_sdk_reads_it(frame):
    """Compatibility: for frames the SDK can read, the shim gives the very message `AsyncSession._receive` does."""
    from google.genai import _live_converters

    raw = json.dumps(frame).encode()
    sdk = types.LiveServerMessage._from_response(
        response=_live_converters._LiveServerMessage_from_mldev(json.loads(raw)), kwargs={})
    ours, skipped = parse_frame(raw)
    assert skipped is None and ours == sdk


def test_one_bad_field_does_not_cost_the_good_ones():
    """A frame whose turn_complete is unreadable still delivers its transcript (and says what it dropped)."""
    message, skipped = parse_frame(json.dumps({"serverContent": {"turnComplete": "maybe",
                                                                 "outputTranscription": {"text": "Hello"}}}))
    assert message.server_content.output_transcription.text == "Hello"
    assert message.server_content.turn_complete is None
    assert "server_content.turnComplete" in skipped.reason


async def test_unreadable_frames_mid_reply_are_skipped_and_the_reply_goes_on(server, live, caplog):
    """Six unreadable frames within 10 s, mid-reply: no reconnect, no failure, the reply arrives whole, once."""
    caplog.set_level(logging.WARNING, logger="bot.live")
    server.reply_audio_ms, server.chunk_ms = 1200, 40
    session, events = await live()
    session.send_text("tell me about the moon")
    await events.wait(AudioChunk)
    for frame in UNREADABLE.values():
        await server.send_frame(frame)
    await events.wait(TurnComplete)
    tutor = [t for t in await events.wait(TurnTranscribed) if t.role == "tutor"]
    assert [(t.text, t.interrupted) for t in tutor] == [(server.reply_text, False)]
    assert sum(len(c.pcm) for c in events.of(AudioChunk)) == 24_000 * 2 * 1200 // 1000
    assert not events.of(Reconnecting) and not events.of(Failed) and len(server.connections) == 1
    assert session.stats.frames_skipped == len(UNREADABLE)
    skipped = [r for r in caplog.records if r.getMessage() == "live.frame_skipped"]
    assert len(skipped) == len(UNREADABLE) and all("moon" not in r.reason for r in skipped)


def peak_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * rate / len(samples)


async def test_reply_audio_at_a_stated_rate_is_played_at_that_rate(settings, monkeypatch):
    """`audio/pcm;rate=16000` is converted to 24 kHz: 1000 ms stays 1000 ms and 440 Hz stays 440 Hz."""
    async with FakeLiveServer(output_rate=16_000, reply_audio_ms=1000) as fake:
        from tests.fake_live import make_client_settings

        session = LiveSession(make_client_settings(fake, monkeypatch), system_instruction="x", connect_options=FAST)
        await session.start()
        events = Collector(session)
        try:
            session.send_text("hello")
            await events.wait(TurnComplete)
            pcm = b"".join(c.pcm for c in events.of(AudioChunk))
        finally:
            await session.close()
            await events.stop()
    assert all(c.sample_rate == 24_000 for c in events.of(AudioChunk))
    assert len(pcm) / 2 / 24_000 == pytest.approx(1.0, abs=0.005)
    assert peak_hz(pcm, 24_000) == pytest.approx(440, abs=3)


async def test_a_sample_split_across_chunks_is_carried_over(server, live):
    """200 ms of reply split at byte 4801 plays as the same 200 ms, byte for byte."""
    _, events = await live()
    pcm = tone(200)
    for part in (pcm[:4801], pcm[4801:]):
        await server.send_raw({"serverContent": {"modelTurn": {"parts": [{"inlineData": {
            "mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(part).decode()}}]}}})
    await server.send_raw({"serverContent": {"turnComplete": True}})
    await events.wait(TurnComplete)
    assert b"".join(c.pcm for c in events.of(AudioChunk)) == pcm


async def test_history_seeding_is_capped_by_turns_and_characters(server, live):
    """A million-character turn and a hundred turns: the newest that fit are seeded, each cut, in order."""
    history = [HistoryTurn("child", f"question {i}") for i in range(100)]
    history[-2] = HistoryTurn("tutor", "x" * 1_000_000)
    await live(history=history)
    await server.wait_for(lambda: server.sessions and server.sessions[0].history)
    seeded = [t["parts"][0]["text"] for t in server.sessions[0].history]
    assert len(seeded) <= MAX_SEED_TURNS and sum(map(len, seeded)) <= MAX_SEED_CHARS
    assert seeded[-1] == "question 99" and seeded[-2].startswith("xxx") and len(seeded[-2]) <= 2_000


async def test_an_endless_reply_is_stopped(server, settings):
    """Past max_reply_seconds the reply is interrupted, the model is told to stop, and no more of it plays."""
    options = LiveConnectOptions(max_retries=1, first_retry_delay=0.01, max_reply_seconds=0.5, close_timeout=0.5)
    session = LiveSession(settings, system_instruction="x", connect_options=options)
    await session.start()
    events = Collector(session)
    try:
        server.endless_next()
        session.send_text("sing forever")
        await events.wait(Interrupted)
        await server.wait_for(lambda: any(c.get("turnComplete") for c in server.connections[0].client_contents))
        await events.wait(TurnComplete)
        played = sum(len(c.pcm) for c in events.of(AudioChunk))
        assert played <= 24_000 * 2 * (0.5 + server.chunk_ms / 1000)
        assert [t.interrupted for t in events.of(TurnTranscribed) if t.role == "tutor"][:1] == [True]
        assert not events.of(Failed)
    finally:
        await session.close()
        await events.stop()


def noise(ms: float, rms: float) -> bytes:
    """16 kHz input audio of random noise at `rms` (a cough, a chair, a hum: Discord sends it, it is no speech)."""
    samples = np.random.default_rng(7).standard_normal(int(16 * ms)) * rms
    return samples.astype("<i2").tobytes()


async def speak_then_pause(session: LiveSession, pcm: bytes) -> None:
    """Send `pcm` at about real-time pace in 20 ms frames, then audio_stream_end."""
    for i in range(0, len(pcm), 640):
        session.send_audio(pcm[i:i + 640])
        await asyncio.sleep(0.02)
    session.end_audio_stream()


@pytest.mark.parametrize("prompt", ["typed", "spoken"])
async def test_a_server_that_never_answers_is_left_after_a_bounded_wait(server, settings, prompt, caplog):
    """Input taken, nothing sent back: reconnect after answer_timeout, then give up with a plain reason (and
    no stray "Task exception was never retrieved" error in the operator's log)."""
    options = LiveConnectOptions(max_retries=3, first_retry_delay=0.01, answer_timeout=0.4, close_timeout=0.5)
    server.answering = False
    session = LiveSession(settings, system_instruction="x", connect_options=options)
    await session.start()
    events = Collector(session)
    try:
        if prompt == "typed":
            session.send_text("hello?")
        else:  # clear speech: a healthy server always sends something back (its transcription, at least)
            await speak_then_pause(session, tone(600, rate=16_000) + noise(400, rms=2))
        failed = (await events.wait(Failed, within=10))[0]
        assert "stopped answering" in failed.reason and len(events.of(Reconnecting)) == 1
    finally:
        await session.close()
        await events.stop()
    gc.collect()  # a task whose exception nobody retrieved is reported when it is collected
    assert "never retrieved" not in caplog.text


async def test_noise_the_server_does_not_take_for_speech_is_no_sign_of_a_stuck_connection(server, settings):
    """A kid's mic sends a cough or a hum now and then: the server's voice detection hears no speech and sends
    nothing at all (the truthful fake does the same). That silence must not replace the connection, and two
    of them must not end the conversation as "Gemini stopped answering"."""
    options = LiveConnectOptions(max_retries=3, first_retry_delay=0.01, answer_timeout=0.4, close_timeout=0.5)
    session = LiveSession(settings, system_instruction="x", connect_options=options)
    await session.start()
    events = Collector(session)
    try:
        for _ in range(3):
            await speak_then_pause(session, noise(400, rms=120))  # about -49 dBFS: louder than comfort noise
            await asyncio.sleep(0.8)
        assert not events.of(Reconnecting) and not events.of(Failed) and len(server.connections) == 1
        await speak_then_pause(session, tone(600, rate=16_000) + noise(400, rms=2))  # and speech is still answered
        await events.wait(TurnComplete)
    finally:
        await session.close()
        await events.stop()


async def test_a_setup_that_never_completes_fails_within_the_start_bound(server, settings):
    """setupComplete never comes: start() gives up after start_timeout, saying so, instead of ~100 s."""
    server.setup_delay = math.inf
    options = LiveConnectOptions(max_retries=5, first_retry_delay=0.01, connect_timeout=0.3, start_timeout=1.0,
                                 close_timeout=0.2)
    session = LiveSession(settings, system_instruction="x", connect_options=options)
    started = time.monotonic()
    with pytest.raises(LiveConnectFailed) as caught:
        await session.start()
    assert time.monotonic() - started < 2.0
    assert "within 1 s" in str(caught.value)
    await session.close()
    await asyncio.sleep(0)

"""The input stage on its own: a kid's frames through the real sink (behind a real `VoiceLink`) and the real
mixer, pumped to what Live's `send_audio`/`end_audio_stream` receive. The Live end records what it is handed:
`LiveSession` only queues it there, so recording it is what the session sees."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.audio.mixer import FRAME_BYTES, SILENCE_FRAME, Mixer
from bot.audio.playback import PlaybackSource
from bot.input_pump import InputPump
from bot.voice_link import VoiceLink
from tests.helpers import FakeVoiceConnector, MockMember, MockVoiceChannel
from tests.signals import tone

TAIL_MS = 200


class LiveInput:
    """What Live is handed, in order: ("audio", pcm, urgent) and ("end", None, True); the next `refuse`
    frames (and `refuse_end` ends) raise `refusal` instead."""

    def __init__(self, refuse: int = 0, refusal: type[Exception] = RuntimeError) -> None:
        self.sent: list[tuple[str, bytes | None, bool]] = []
        self.refuse = refuse
        self.refuse_end = 0
        self.refusal = refusal

    def send_audio(self, pcm16k: bytes, *, urgent: bool = False) -> None:
        if self.refuse:
            self.refuse -= 1
            raise self.refusal("refused")
        self.sent.append(("audio", pcm16k, urgent))

    def end_audio_stream(self) -> None:
        if self.refuse_end:
            self.refuse_end -= 1
            raise self.refusal("refused")
        self.sent.append(("end", None, True))

    @property
    def ends(self) -> int:
        return sum(kind == "end" for kind, _, _ in self.sent)


@pytest.fixture
async def stage():
    """A running pump between a kid's voice (fake Discord UDP side, real sink) and a recording Live end."""
    heard: list[str] = []
    pump = InputPump(Mixer(tail_ms=TAIL_MS), on_heard=lambda _id, name: heard.append(name), tags={})
    connector = FakeVoiceConnector(real_player=False)
    link = VoiceLink(MockVoiceChannel(), connector, pump.on_kid_audio, PlaybackSource(), tags={},
                     on_kid_left=pump.on_kid_left)
    await link.open()
    live = LiveInput()
    task = asyncio.create_task(pump.run(link, live))
    yield pump, connector.last, live, heard
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await link.close()


def speech(seconds: float) -> bytes:
    return tone(300.0, 48_000, seconds, amplitude=0.3, channels=2)


async def until(predicate, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_a_spurt_reaches_live_in_frames_then_its_tail_and_one_end_then_the_pump_rests(stage):
    pump, voice, live, heard = stage
    await asyncio.sleep(0.1)
    assert live.sent == []  # resting: nothing owed to Live
    await voice.say(MockMember(display_name="Ana"), speech(0.6))
    await until(lambda: live.ends == 1)
    audio = [(pcm, urgent) for kind, pcm, urgent in live.sent if kind == "audio"]
    assert all(len(pcm) == FRAME_BYTES for pcm, _ in audio)
    voiced = [pcm for pcm, _ in audio if pcm != SILENCE_FRAME]
    assert len(voiced) >= 29  # 0.6 s of speech (soxr may carry a few ms into one more frame)
    assert audio[0][1]  # the spurt's first frame goes at once
    assert audio[-1][0] == SILENCE_FRAME and live.sent[-1][0] == "end"
    assert heard and set(heard) == {"Ana"} and len(pump.latency_ms) >= 1
    settled = len(live.sent)
    await asyncio.sleep(0.2)
    assert len(live.sent) == settled  # between spurts the pump sends nothing


async def test_a_frame_live_refuses_is_logged_and_the_kid_is_still_heard(stage, caplog):
    _pump, voice, live, _heard = stage
    live.refuse = 1
    with caplog.at_level(logging.ERROR, logger="bot.conversation"):
        await voice.say(MockMember(display_name="Ben"), speech(0.4))
        await until(lambda: live.ends == 1)
    assert [r.message for r in caplog.records].count("conversation.send_failed") == 1
    assert sum(pcm != SILENCE_FRAME for kind, pcm, _ in live.sent if kind == "audio") >= 18


async def test_after_a_stall_a_frame_live_refuses_costs_only_that_frame_and_the_turn_still_ends(stage, caplog):
    """A stalled loop leaves a backlog the pump sends in one tick; one frame of it failing must not take the
    rest (or the end of the turn) with it. `LiveSession.send_audio` only copies the frame into its outbox,
    so what it can actually raise is MemoryError (that copy, the outbox append) — that is what Live raises."""
    pump, voice, live, _heard = stage
    live.refusal = MemoryError
    await asyncio.sleep(0.1)  # resting: the stall below is what wakes it
    live.refuse = 1
    with caplog.at_level(logging.ERROR, logger="bot.conversation"):
        voice.speak(MockMember(display_name="Cai"), speech(0.4)).join()  # the loop stalls for the whole 0.4 s
        await until(lambda: live.ends == 1)
    voiced = sum(pcm != SILENCE_FRAME for kind, pcm, _ in live.sent if kind == "audio")
    assert voiced >= 19  # 20 frames of speech (soxr may carry a few ms into one more), one of them refused
    assert [r.message for r in caplog.records].count("conversation.send_failed") == 1
    assert pump.failed_sends == 1
    assert live.sent[-1][0] == "end"


async def test_an_end_of_speech_live_refuses_goes_again_next_tick_so_the_turn_still_ends(stage, caplog):
    pump, voice, live, _heard = stage
    live.refusal, live.refuse_end = MemoryError, 1
    with caplog.at_level(logging.ERROR, logger="bot.conversation"):
        await voice.say(MockMember(display_name="Dev"), speech(0.2))
        await until(lambda: live.ends == 1)
    assert [r.message for r in caplog.records].count("conversation.send_failed") == 1 and pump.failed_sends == 1
    settled = len(live.sent)
    await asyncio.sleep(0.2)
    assert len(live.sent) == settled and live.sent[-1][0] == "end"  # one end, then the pump rests again

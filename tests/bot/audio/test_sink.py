"""TutorSink on a real event loop, fed from a separate thread the way voice-recv's router thread feeds it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import discord
import numpy as np
import pytest
from discord.ext.voice_recv import VoiceData
from discord.ext.voice_recv.rtp import FakePacket

from bot.audio.sink import TutorSink
from tests.dave_harness import sine_frames

FRAMES = 50


def make_user(user_id: int, name: str, *, bot: bool = False) -> discord.User:
    return discord.User(state=None, data={"id": str(user_id), "username": name.lower(), "discriminator": "0",
                                          "avatar": None, "global_name": name, "bot": bot})


def voice_data(pcm: bytes | None, seq: int = 0) -> VoiceData:
    return VoiceData(FakePacket(1, seq, seq * 960), None, pcm=pcm)


class Collector:
    """on_audio callback that records calls and the thread they ran on."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[int, str, bytes, float]] = []
        self.threads: set[int] = set()
        self._fail_first = fail_first

    def __call__(self, user_id: int, name: str, pcm16k: bytes, received_at: float) -> None:
        self.threads.add(threading.get_ident())
        if self._fail_first > 0:
            self._fail_first -= 1
            raise RuntimeError("mixer exploded")
        self.calls.append((user_id, name, pcm16k, received_at))

    def bytes_for(self, user_id: int) -> int:
        return sum(len(c[2]) for c in self.calls if c[0] == user_id)


async def feed_from_thread(sink: TutorSink, items: list[tuple[object, VoiceData]]) -> None:
    """Call write() from a worker thread, as the router thread does, then let the loop run the callbacks."""
    def run() -> None:
        for user, data in items:
            sink.write(user, data)

    await asyncio.to_thread(run)
    await asyncio.sleep(0.05)


async def test_two_users_arrive_downsampled_on_the_loop_thread():
    """Frames from two kids arrive as 16 kHz mono (≈640 B per 20 ms), per user, on the event loop's thread."""
    collector = Collector()
    sink = TutorSink(asyncio.get_running_loop(), collector)
    ada, bo = make_user(1, "Ada"), make_user(2, "Bo")
    frames = sine_frames(FRAMES)
    await feed_from_thread(sink, [(u, voice_data(f, i)) for i, f in enumerate(frames) for u in (ada, bo)])

    assert collector.threads == {threading.get_ident()}
    for user in (ada, bo):
        assert FRAMES * 640 - 1500 < collector.bytes_for(user.id) <= FRAMES * 640
        assert sink.frames_in[user.id] == FRAMES and sink.bytes_in[user.id] == FRAMES * 3840
    assert {c[1] for c in collector.calls} == {"Ada", "Bo"}
    assert all(len(c[2]) % 2 == 0 for c in collector.calls)  # empty chunks too: they mean "still talking"
    assert len(collector.calls) == 2 * FRAMES
    times = [c[3] for c in collector.calls]
    assert times == sorted(times)


async def test_downsampled_audio_keeps_the_tone():
    """The delivered 16 kHz stream still carries the 440 Hz tone."""
    collector = Collector()
    sink = TutorSink(asyncio.get_running_loop(), collector)
    await feed_from_thread(sink, [(make_user(1, "Ada"), voice_data(f)) for f in sine_frames(FRAMES)])
    samples = np.frombuffer(b"".join(c[2] for c in collector.calls), dtype="<i2").astype(float)
    peak_hz = np.argmax(np.abs(np.fft.rfft(samples))) * 16_000 / len(samples)
    assert abs(peak_hz - 440) < 5


async def test_bots_and_unknown_users_are_ignored():
    """write() ignores user None and bot accounts."""
    collector = Collector()
    sink = TutorSink(asyncio.get_running_loop(), collector)
    frame = sine_frames(1)[0]
    await feed_from_thread(sink, [(None, voice_data(frame)), (make_user(9, "Robo", bot=True), voice_data(frame))] * 5)
    assert collector.calls == [] and not sink.frames_in and sink.errors == 0


async def test_empty_pcm_is_skipped_safely():
    """A frame with no PCM (None or empty) is neither an error nor delivered."""
    collector = Collector()
    sink = TutorSink(asyncio.get_running_loop(), collector)
    await feed_from_thread(sink, [(make_user(1, "Ada"), voice_data(None)), (make_user(1, "Ada"), voice_data(b""))])
    assert collector.calls == [] and sink.errors == 0


async def test_callback_exception_is_counted_and_audio_keeps_flowing():
    """An exception in on_audio is counted on the loop; later frames are still delivered."""
    collector = Collector(fail_first=3)
    sink = TutorSink(asyncio.get_running_loop(), collector)
    await feed_from_thread(sink, [(make_user(1, "Ada"), voice_data(f)) for f in sine_frames(FRAMES)])
    assert sink.errors == 3
    assert len(collector.calls) > 10


async def test_odd_length_frame_is_counted_and_never_escapes():
    """A frame that is not whole stereo samples raises inside write(), is counted, and the next frame flows."""
    collector = Collector()
    sink = TutorSink(asyncio.get_running_loop(), collector)
    ada = make_user(1, "Ada")
    frames = sine_frames(10)
    await feed_from_thread(sink, [(ada, voice_data(b"\x01" * 3839))] + [(ada, voice_data(f)) for f in frames])
    assert sink.errors == 1
    assert collector.bytes_for(1) > 0


async def test_errors_are_logged_at_most_once_per_interval(caplog):
    """A hundred failing frames log one warning but count a hundred errors."""
    sink = TutorSink(asyncio.get_running_loop(), Collector(), error_log_interval=60.0)
    with caplog.at_level(logging.WARNING, logger="bot.audio.sink"):
        await feed_from_thread(sink, [(make_user(1, "Ada"), voice_data(b"\x01" * 3))] * 100)
    assert sink.errors == 100
    assert [r.getMessage() for r in caplog.records] == ["sink.write_failed"]


def test_closed_loop_drops_quietly():
    """After the loop closes, write() drops frames without raising or counting an error."""
    loop = asyncio.new_event_loop()
    loop.close()
    sink = TutorSink(loop, Collector())
    for frame in sine_frames(6):
        sink.write(make_user(1, "Ada"), voice_data(frame))
    assert sink.errors == 0 and sink.dropped_loop_closed > 0


@pytest.mark.parametrize("release", ["forget", "cleanup"])
async def test_released_resampler_starts_over(release):
    """forget(user) and cleanup() drop resampler state, so the next frame starts a fresh stream (filter refills)."""
    collector = Collector()
    sink = TutorSink(asyncio.get_running_loop(), collector)
    ada = make_user(1, "Ada")
    frames = sine_frames(20)
    await feed_from_thread(sink, [(ada, voice_data(f)) for f in frames])
    continuing = collector.bytes_for(1)
    sink.forget(1) if release == "forget" else sink.cleanup()
    collector.calls.clear()
    await feed_from_thread(sink, [(ada, voice_data(f)) for f in frames])
    assert collector.bytes_for(1) == continuing  # same warm-up as the first time: a new resampler


async def test_sink_wants_pcm():
    """voice-recv must decode Opus for this sink."""
    assert TutorSink(asyncio.get_running_loop(), Collector()).wants_opus() is False


async def test_sink_does_not_keep_its_conversation_alive():
    """A bound-method callback is held weakly: voice-recv threads outliving a conversation don't pin it."""
    import gc
    import weakref

    class Owner:
        def on_audio(self, *args):
            pass

    owner = Owner()
    sink = TutorSink(asyncio.get_running_loop(), owner.on_audio)
    ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert ref() is None
    sink.write(make_user(1, "Ada"), voice_data(sine_frames(1)[0]))  # and delivering afterwards is harmless
    await asyncio.sleep(0.05)
    assert sink.errors == 0


async def test_a_kid_leaving_frees_their_stream_and_is_reported_on_the_loop():
    """voice_member_disconnect (op 13) drops that kid's resampler and calls on_left on the loop thread; with no
    cached member the SSRC says who it was."""
    left: list[tuple[int, int]] = []
    sink = TutorSink(asyncio.get_running_loop(), Collector(),
                     on_left=lambda user_id: left.append((user_id, threading.get_ident())))
    ana, ben = make_user(1, "Ana"), make_user(2, "Ben")
    frames = sine_frames(3)
    await feed_from_thread(sink, [(ana, VoiceData(FakePacket(11, i, i * 960), ana, pcm=frames[i])) for i in range(3)]
                           + [(ben, VoiceData(FakePacket(22, i, i * 960), ben, pcm=frames[i])) for i in range(3)])
    assert set(sink._downsamplers) == {1, 2}

    await asyncio.to_thread(sink.on_voice_member_disconnect, ana, 11)
    await asyncio.to_thread(sink.on_voice_member_disconnect, None, 22)  # member not in the cache
    await asyncio.to_thread(sink.on_voice_member_disconnect, None, 99)  # nobody we heard: ignored
    await asyncio.sleep(0.05)
    assert [user_id for user_id, _ in left] == [1, 2]
    assert {thread for _, thread in left} == {threading.get_ident()} and sink._downsamplers == {}


async def test_frames_that_pile_up_wake_the_loop_once():
    """Frames written while the loop is busy are handed over in one batch: one wake, every frame, in order."""
    collector = Collector()
    sink = TutorSink(asyncio.get_running_loop(), collector)
    ada = make_user(1, "Ada")
    frames = sine_frames(FRAMES)
    writer = threading.Thread(target=lambda: [sink.write(ada, voice_data(f, i)) for i, f in enumerate(frames)])
    writer.start()
    writer.join()  # the loop did not run meanwhile: everything waits for one wake
    await asyncio.sleep(0.05)
    assert sink.wakes == 1
    assert len(collector.calls) == FRAMES and collector.threads == {threading.get_ident()}
    times = [c[3] for c in collector.calls]
    assert times == sorted(times)


async def test_a_polled_sink_waits_for_the_consumer_and_keeps_arrival_times():
    """Polled (the input pump ticking), frames never wake the loop; deliver_pending() hands them over with the
    time each arrived; turning polling off delivers what waits, and the next frame wakes the loop again."""
    collector = Collector()
    sink = TutorSink(asyncio.get_running_loop(), collector)
    ada = make_user(1, "Ada")
    frames = sine_frames(10)
    sink.poll(True)
    before = time.monotonic()
    await feed_from_thread(sink, [(ada, voice_data(f, i)) for i, f in enumerate(frames[:5])])
    assert collector.calls == [] and sink.wakes == 0
    sink.deliver_pending()
    assert len(collector.calls) == 5
    assert all(before <= c[3] < time.monotonic() - 0.04 for c in collector.calls)  # stamped on arrival, not now

    await feed_from_thread(sink, [(ada, voice_data(frames[5], 5))])
    assert len(collector.calls) == 5
    sink.poll(False)
    assert len(collector.calls) == 6 and sink.wakes == 0
    await feed_from_thread(sink, [(ada, voice_data(f, i)) for i, f in enumerate(frames[6:], 6)])
    assert len(collector.calls) == 10 and sink.wakes >= 1  # unpolled: delivered without anyone asking


async def test_a_leave_is_not_overtaken_by_the_kids_last_frames():
    """Frames still waiting for a polling consumer reach on_audio before on_left, as they arrived."""
    events: list[str] = []
    sink = TutorSink(asyncio.get_running_loop(), lambda *args: events.append("audio"),
                     on_left=lambda user_id: events.append("left"))
    ana = make_user(1, "Ana")
    sink.poll(True)
    frames = sine_frames(3)
    await feed_from_thread(sink, [(ana, VoiceData(FakePacket(11, i, i * 960), ana, pcm=frames[i])) for i in range(3)])
    await asyncio.to_thread(sink.on_voice_member_disconnect, ana, 11)
    await asyncio.sleep(0.05)
    assert events == ["audio"] * 3 + ["left"]

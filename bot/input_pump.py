"""The input stage: kids' audio from the voice sink, through the mixer, to Live, one 20 ms frame at a time.

One way only (DESIGN.md §1): the sink hands each kid's 16 kHz frames to `on_kid_audio` on the event loop,
the mixer merges the kids into one stream with its silence tail and end-of-stream signal, and `run()` pulls
from it on `PumpClock`'s schedule into `LiveSession.send_audio`. Between talk spurts it rests instead of
ticking 50 times a second for nothing; while it ticks the sink is polled, so kids' frames wait for the next
tick instead of waking the loop one by one (`bot.audio.sink`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from bot.audio.mixer import STREAM_END, Mixer, StreamEnd
from bot.audio.pump_clock import PumpClock

log = logging.getLogger("bot.conversation")

LATENCY_SAMPLES = 500  # input latencies kept for `/tutor status`


class KidAudio(Protocol):
    """Where the kids' frames come from (`bot.voice_link.VoiceLink`, whose sink is replaced on each rejoin)."""

    def poll_kid_audio(self, polled: bool) -> None: ...

    def take_kid_audio(self) -> None: ...


class AudioOut(Protocol):
    """Where the mixed stream goes (`bot.live.session.LiveSession`)."""

    def send_audio(self, pcm16k: bytes, *, urgent: bool = False) -> None: ...

    def end_audio_stream(self) -> None: ...


class InputPump:
    """Feeds `mixer` from the sink's callbacks and pumps its output to Live; `latency_ms` says how long a
    kid's frame waited before its mix was handed to Live, `failed_sends` how many outputs Live refused."""

    def __init__(self, mixer: Mixer, *, on_heard: Callable[[int, str], None], tags: dict[str, Any]) -> None:
        self._mixer = mixer
        self._on_heard = on_heard
        self._tags = tags
        self.latency_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._last_kid_audio_at: float | None = None
        self._kid_audio = asyncio.Event()  # wakes the resting pump
        self._end_owed = False  # Live refused the end of the last spurt; it goes again next tick
        self.failed_sends = 0  # mixer outputs Live refused (each logged as `conversation.send_failed`)

    def on_kid_audio(self, user_id: int, display_name: str, pcm16k: bytes, at: float) -> None:
        """Runs on the event loop (the sink hands over with call_soon_threadsafe)."""
        self._on_heard(user_id, display_name)
        self._last_kid_audio_at = at
        self._mixer.push(user_id, pcm16k, at)
        self._kid_audio.set()

    def on_kid_left(self, user_id: int) -> None:
        """A kid left the voice call: their queued audio goes; who spoke when stays for naming turns."""
        self._mixer.remove(user_id)
        log.info("conversation.kid_left", extra={**self._tags, "user_id": user_id})

    async def run(self, voice: KidAudio, live: AudioOut) -> None:
        """Every 20 ms: one mixed frame to Live, the silence tail, or the end-of-stream signal (`PumpClock`).

        Between talk spurts (the mixer idle: nothing queued, no tail owed) it rests until a kid's audio
        arrives. While it ticks, kids' frames wait for the next tick instead of waking the loop (the sink is
        polled), except while the mixer holds for a late speaker: then their audio ends the wait at once,
        and the hold's deadline ends it otherwise.
        """
        clock = PumpClock()
        clock.restart(time.monotonic())
        not_before = 0.0  # a timer may fire a hair early; the mixer must see the time it was set for
        while True:
            voice.take_kid_audio()  # polled: what came since the last pull, with the times it came
            if self._end_owed:  # Live refused the last end of a spurt: the kid's turn must still end
                self._send(live, STREAM_END, True)
            if self._mixer.idle and not self._end_owed:  # nothing owed to Live: rest until a kid's audio comes
                await self._until_kid_audio(voice)
                clock.restart(time.monotonic())
            now = max(time.monotonic(), not_before)
            try:
                pulled = clock.pull(self._mixer, now)
            except Exception:  # a mixer fault must not stop the kids being heard
                log.exception("conversation.pump_failed", extra=self._tags)
                pulled = []
            for out, urgent in pulled:  # after a stall, several frames: each goes (or fails) on its own
                self._send(live, out, urgent)
            wake_at, on_audio = clock.next_wake(self._mixer, now)
            if on_audio:  # holding for a late kid: their audio, or the hold's deadline, whichever is first
                timed_out = await self._until_kid_audio(voice, deadline=wake_at)
                not_before = wake_at if timed_out else 0.0
            else:
                await asyncio.sleep(max(0.0, wake_at - time.monotonic()))
                not_before = wake_at

    async def _until_kid_audio(self, voice: KidAudio, deadline: float | None = None) -> bool:
        """Wait for a kid's frame (unpolled: the next one wakes the loop) or until `deadline` (monotonic, which
        is the loop's clock); True when the deadline ended the wait."""
        timed_out = False

        def give_up() -> None:
            nonlocal timed_out
            timed_out = True
            self._kid_audio.set()

        timer = asyncio.get_running_loop().call_at(deadline, give_up) if deadline is not None else None
        self._kid_audio.clear()
        voice.poll_kid_audio(False)  # delivers what waits, so a frame already here ends the wait
        try:
            await self._kid_audio.wait()
        finally:
            if timer is not None:
                timer.cancel()
            voice.poll_kid_audio(True)  # ticking again: frames wait for the next pull
        return timed_out

    def _send(self, live: AudioOut, out: bytes | StreamEnd, urgent: bool) -> None:
        """Hand one mixer output to Live (`urgent`: it starts or ends a talk spurt).

        A failure costs only this output: it is logged and counted, and the pump goes on with the next. A
        refused end of a spurt is owed and tried again next tick, or the kid's turn would never end.
        """
        try:
            if isinstance(out, StreamEnd):
                self._end_owed = True
                live.end_audio_stream()
                self._end_owed = False
                return
            live.send_audio(out, urgent=urgent)
        except Exception:
            self.failed_sends += 1
            log.exception("conversation.send_failed", extra={
                **self._tags, "what": "end" if isinstance(out, StreamEnd) else "audio",
                "failed_sends": self.failed_sends})
            return
        if self._last_kid_audio_at is not None:
            self.latency_ms.append((time.monotonic() - self._last_kid_audio_at) * 1000)
            self._last_kid_audio_at = None

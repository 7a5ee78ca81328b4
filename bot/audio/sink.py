"""TutorSink: voice-recv's decoded PCM per kid → 16 kHz mono chunks on the event loop.

`write()` runs on voice-recv's router thread while it holds the router lock (vr/router.py:106-113), and the socket
thread waits for that lock to feed packets. An exception there ends listening for everybody and a slow `write` stalls
UDP reading, so this sink only downsamples (tens of µs) and queues the result for the loop; every failure is
counted and logged at most once per interval, never raised.

Hand-over to the loop, in batches: a wake costs more than the frame's own work there (a self-pipe write in this
thread, then a whole loop iteration), and the mixer only takes audio when the input pump pulls anyway. So
`write()` queues frames and wakes the loop only when no wake is pending (one `call_soon_threadsafe` per batch),
and while the pump is ticking it `poll(True)`s the sink: nothing wakes the loop, and the pump calls
`deliver_pending()` before each pull (it unpolls while it waits for a late kid, whose frame should wake it). No
frame reaches the mixer later than before, and each keeps the time it arrived.

Each kid gets a resampler stream of their own, made on their first frame. When a kid leaves the call (voice op 13,
which voice-recv dispatches as `voice_member_disconnect` on its event thread, under the same router lock) their
stream is dropped and `on_left` tells the conversation, so a kid who comes back starts from a clean state.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import weakref
from asyncio import AbstractEventLoop
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from discord.ext import voice_recv

from bot.audio.convert import Downsampler

log = logging.getLogger(__name__)

ERROR_LOG_INTERVAL_SECONDS = 10.0

#: on_audio(user_id, display_name, pcm16k_mono, monotonic_time), called on the event loop thread
AudioCallback = Callable[[int, str, bytes, float], None]
#: on_left(user_id), called on the event loop thread when a kid leaves the voice call
LeftCallback = Callable[[int], None]


def _held_weakly(callback: Callable[..., None]) -> Callable[[], Callable[..., None] | None]:
    """A bound method is held weakly: voice-recv's threads (its keepalive sleeps for seconds) can outlive
    the conversation, and must not keep it — with its Live session and soxr streams — alive."""
    if inspect.ismethod(callback):
        return weakref.WeakMethod(callback)
    return lambda: callback


class TutorSink(voice_recv.AudioSink):
    """Per-user downsampling of received voice; delivers `(user_id, name, pcm16k_mono, t)` to `on_audio` on the loop.

    Use a fresh TutorSink for each `listen()`: voice-recv calls `cleanup()` from its stopper thread when a reader ends.
    """

    def __init__(self, loop: AbstractEventLoop, on_audio: AudioCallback, *, on_left: LeftCallback | None = None,
                 error_log_interval: float = ERROR_LOG_INTERVAL_SECONDS) -> None:
        super().__init__()
        self._loop = loop
        self._on_audio = _held_weakly(on_audio)
        self._on_left = _held_weakly(on_left) if on_left is not None else None
        # touched by write() on the router thread and by the leave listener, which holds the router lock
        self._downsamplers: dict[int, Downsampler] = {}
        self._ssrc_users: dict[int, int] = {}  # who an SSRC belongs to, for a leave whose member is not cached
        self._error_log_interval = error_log_interval
        self._next_error_log_at = 0.0
        self._errors_lock = threading.Lock()
        self.frames_in: Counter[int] = Counter()  # per user id, frames accepted by write()
        self.bytes_in: Counter[int] = Counter()  # per user id, 48 kHz stereo PCM bytes accepted
        self.errors = 0  # exceptions in write() or in on_audio
        self.dropped_loop_closed = 0
        self.wakes = 0  # times write() woke the loop (one per batch)
        # frames waiting for the loop: appended by write() on the router thread, taken on the loop
        self._pending: deque[tuple[int, str, bytes, float]] = deque()
        self._pending_lock = threading.Lock()
        self._wake_scheduled = False
        self._polled = False

    def wants_opus(self) -> bool:
        """False: voice-recv decodes to 48 kHz stereo PCM (concealed frames arrive as Opus PLC output)."""
        return False

    def write(self, user: Any, data: voice_recv.VoiceData) -> None:
        """Downsample one 20 ms frame and schedule its delivery; never raises, never blocks."""
        if user is None or getattr(user, "bot", False):
            return
        try:
            pcm = data.pcm
            if not pcm:
                return
            user_id = user.id
            ssrc = getattr(getattr(data, "packet", None), "ssrc", None)
            if ssrc is not None:
                self._ssrc_users[ssrc] = user_id
            self.frames_in[user_id] += 1
            self.bytes_in[user_id] += len(pcm)
            downsampler = self._downsamplers.get(user_id)
            if downsampler is None:
                downsampler = self._downsamplers[user_id] = Downsampler()
            # Delivered even when soxr returned nothing yet: to the mixer it means "still talking".
            self._schedule(user_id, str(user.display_name), downsampler.process(pcm))
        except Exception as error:
            self._count_error(error)

    def _schedule(self, user_id: int, name: str, pcm16k: bytes) -> None:
        with self._pending_lock:
            self._pending.append((user_id, name, pcm16k, time.monotonic()))
            wake = not self._wake_scheduled and not self._polled
            self._wake_scheduled |= wake
        if not wake:
            return
        self.wakes += 1
        try:
            self._loop.call_soon_threadsafe(self._woken)
        except RuntimeError:  # the loop is closed: the conversation is gone, nothing to deliver to
            self.dropped_loop_closed += 1

    def _woken(self) -> None:
        with self._pending_lock:
            self._wake_scheduled = False
        self.deliver_pending()

    def deliver_pending(self) -> None:
        """On the loop: hand every queued frame to `on_audio`, oldest first."""
        with self._pending_lock:
            batch = list(self._pending)
            self._pending.clear()
        if not batch:
            return
        callback = self._on_audio()
        if callback is None:
            return
        for user_id, name, pcm16k, received_at in batch:
            try:
                callback(user_id, name, pcm16k, received_at)
            except Exception as error:
                self._count_error(error)

    def poll(self, polled: bool) -> None:
        """On the loop: while polled, frames wait for `deliver_pending()` instead of waking the loop; turning
        polling off delivers what waits, so nothing is left behind."""
        with self._pending_lock:
            self._polled = polled
        if not polled:
            self.deliver_pending()

    def _count_error(self, error: Exception) -> None:
        now = time.monotonic()
        with self._errors_lock:
            self.errors += 1
            if now < self._next_error_log_at:
                return
            self._next_error_log_at = now + self._error_log_interval
            total = self.errors
        log.warning("sink.write_failed", exc_info=error, extra={"errors": total})

    def forget(self, user_id: int) -> None:
        """Drop a user's resampler state (they left, or their stream restarts)."""
        self._downsamplers.pop(user_id, None)
        for ssrc in [ssrc for ssrc, owner in self._ssrc_users.items() if owner == user_id]:
            del self._ssrc_users[ssrc]

    @voice_recv.AudioSink.listener()
    def on_voice_member_disconnect(self, member: Any, ssrc: int | None) -> None:
        """A kid left the call (voice op 13): free their stream and tell the conversation; never raises."""
        try:
            user_id = member.id if member is not None else self._ssrc_users.get(ssrc) if ssrc is not None else None
            if user_id is None:
                return
            self.forget(user_id)
            if self._on_left is not None:
                self._loop.call_soon_threadsafe(self._left, user_id)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            self.dropped_loop_closed += 1
        except Exception as error:
            self._count_error(error)

    def _left(self, user_id: int) -> None:
        self.deliver_pending()  # their last frames first: the leave must not be overtaken by them
        try:
            callback = self._on_left() if self._on_left is not None else None
            if callback is not None:
                callback(user_id)
        except Exception as error:
            self._count_error(error)

    def cleanup(self) -> None:
        """Release every resampler; voice-recv calls this when the reader stops."""
        self._downsamplers.clear()
        self._ssrc_users.clear()

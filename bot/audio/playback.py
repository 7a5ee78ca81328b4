"""The tutor's voice into Discord: Gemini's 24 kHz mono chunks in, 20 ms of 48 kHz stereo out.

discord.py's AudioPlayer thread calls `read()` every 20 ms and stops the player for good when it
returns b"", so `read()` returns exactly `DISCORD_FRAME_BYTES` (3840) while open — queued audio, or
silence when nothing is queued — and b"" only after `close()`. `feed`, `end_of_turn` and `flush`
come from the event loop; every method is safe from any thread.

`feed()` only queues the 24 kHz chunk; it is upsampled by the next `read()` on the player thread
(or by `end_of_turn`/`buffered_ms`). soxr releases the GIL while it works, and when the voice
threads are busy the event loop then waits up to a switch interval to get it back (~6 ms a chunk
measured with 60 voice threads), which delayed every conversation's sends and events.

One `PlaybackSource` lives as long as the conversation, but a voice client is replaced on every rejoin, and
discord.py's player calls `cleanup()` on its source when its thread ends. So each `play()` gets its own
`PlaybackTap` (`tap()`): the old player's cleanup only detaches its tap, the new player keeps reading the
same queued audio, and a new tap detaches the previous one so two players never share the buffer. Only the
conversation's `close()` ends the source.

Audio queued beyond `max_queued_ms` is dropped (counted in `dropped_ms`, logged once): Live streams
faster than real time, and a misbehaving server must not grow the queue without bound.

Idle is free: between replies there is nothing to say, and discord.py's player would still encode,
encrypt and send 50 silence packets a second with SPEAKING on. Given the voice client
(`pause_when_idle`), `read()` pauses it once nothing is queued and no turn is open (discord.py then
sends its five Opus silence frames, turns SPEAKING off and stops reading), and the next `feed()`
resumes it: the player wakes at once, so the first reply frame leaves sooner than it would have on the
running 20 ms tick. Both calls are made under `_lock`, so a pause can never land after the resume that
should have cancelled it.

Two locks, always taken in this order: `_resample_lock` keeps the one `Upsampler` (not thread-safe)
serial, `_lock` guards the queues. `read()` converts only when `_resample_lock` is free, so the
player never waits behind resampling; a `flush()` waits for a conversion in progress, so no
pre-barge-in audio slips in after it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Protocol

import discord

from bot.audio.convert import Upsampler
from bot.audio.formats import DISCORD, DISCORD_FRAME_BYTES

log = logging.getLogger(__name__)

SILENCE_FRAME = bytes(DISCORD_FRAME_BYTES)
MAX_QUEUED_MS = 60_000.0  # a tutor turn is a few sentences; more than a minute queued is a misbehaving server
_OUT_BYTES_PER_IN_BYTE = 4  # 24 kHz mono s16le → 48 kHz stereo s16le
LATENCY_HISTORY = 100
_COMPACT_BYTES = 64 * 1024  # reclaim consumed bytes once this many have piled up at the front


class PlayerControl(Protocol):
    """The part of discord.py's `VoiceClient` that pauses and resumes its player thread."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class PlaybackSource(discord.AudioSource):
    """A never-ending PCM source for the voice client; Live audio in, Discord frames out."""

    def __init__(self, *, max_queued_ms: float = MAX_QUEUED_MS) -> None:
        self._max_queued_bytes = int(DISCORD.bytes_for_ms(max_queued_ms))
        self._upsampler = Upsampler()
        self._resample_lock = threading.Lock()
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._unconverted: deque[tuple[bytes, float | None]] = deque()  # (24 kHz chunk, fed_at if it opens a turn)
        self._offset = 0  # bytes before this index were already read
        self._turn_open = False  # audio arrived and end_of_turn() has not come yet
        self._closed = False
        self._tap: PlaybackTap | None = None
        # (stream position of a turn's first byte, monotonic time it was fed) for turns not yet heard
        self._pending_turns: deque[tuple[int, float]] = deque()
        self._bytes_read = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self._queued_in_bytes = 0  # 24 kHz bytes in `_unconverted`
        self._player: PlayerControl | None = None
        self._paused = False
        self.underruns = 0
        self.frames_read = 0
        self.pauses = 0
        self.dropped_ms = 0.0  # reply audio refused because the queue was full

    def pause_when_idle(self, player: PlayerControl | None) -> None:
        """Pause `player` while there is nothing to play, resume it when audio comes (None: never pause).

        Call after `player.play(...)`; the new voice client after a rejoin is bound the same way.
        """
        with self._lock:
            self._player, self._paused = player, False

    def feed(self, pcm24k: bytes) -> None:
        """Queue a chunk of Live's 24 kHz mono s16le speech (converted later, off the event loop)."""
        if len(pcm24k) % 2:
            raise ValueError(f"24 kHz mono s16le needs whole 2-byte samples; got {len(pcm24k)} bytes")
        with self._lock:
            if self._closed:
                return
            queued = len(self._buffer) - self._offset + _OUT_BYTES_PER_IN_BYTE * self._queued_in_bytes
            if queued + _OUT_BYTES_PER_IN_BYTE * len(pcm24k) > self._max_queued_bytes:
                if not self.dropped_ms:
                    log.warning("playback.queue_full", extra={"queued_ms": round(DISCORD.ms_for_bytes(queued))})
                self.dropped_ms += DISCORD.ms_for_bytes(_OUT_BYTES_PER_IN_BYTE * len(pcm24k))
                return
            opens_turn = not self._turn_open
            self._turn_open = True
            self._queued_in_bytes += len(pcm24k)
            self._unconverted.append((pcm24k, time.monotonic() if opens_turn else None))
            if self._paused:
                self._paused = False
                self._player.resume()  # type: ignore[union-attr]

    def _convert_unconverted(self) -> None:
        """Upsample every queued chunk into the frame buffer; call with `_resample_lock` held."""
        with self._lock:
            chunks = list(self._unconverted)
            self._unconverted.clear()
            self._queued_in_bytes = 0
        for pcm24k, opened_at in chunks:
            pcm48k = self._upsampler.process(pcm24k)
            with self._lock:
                if self._closed:
                    return
                if opened_at is not None:
                    self._pending_turns.append((self._bytes_read + len(self._buffer) - self._offset, opened_at))
                self._buffer += pcm48k

    def end_of_turn(self) -> None:
        """Live finished the turn: push the resampler's tail out and pad the last frame."""
        with self._resample_lock:
            self._convert_unconverted()
            tail = self._upsampler.flush()
            with self._lock:
                self._buffer += tail
                partial = (len(self._buffer) - self._offset) % DISCORD_FRAME_BYTES
                if partial:
                    self._buffer += bytes(DISCORD_FRAME_BYTES - partial)
                self._turn_open = False

    def flush(self) -> int:
        """Barge-in: drop everything queued now and start the next turn clean; returns ms dropped."""
        with self._resample_lock:
            self._upsampler.reset()
            with self._lock:
                dropped = len(self._buffer) - self._offset + _OUT_BYTES_PER_IN_BYTE * self._queued_in_bytes
                self._unconverted.clear()
                self._queued_in_bytes = 0
                self._buffer.clear()
                self._offset = 0
                self._turn_open = False
                self._pending_turns.clear()
        return round(DISCORD.ms_for_bytes(dropped))

    def read(self) -> bytes:
        """Next 20 ms of 48 kHz stereo s16le for discord.py's player thread."""
        if self._unconverted and self._resample_lock.acquire(blocking=False):
            try:
                self._convert_unconverted()
            finally:
                self._resample_lock.release()
        with self._lock:
            if self._closed:
                return b""
            self.frames_read += 1
            if len(self._buffer) - self._offset < DISCORD_FRAME_BYTES:
                if self._turn_open:
                    self.underruns += 1  # mid turn and Live's audio has not kept up
                elif self._player is not None and not self._paused and not self._unconverted:
                    self._paused = True  # idle: this is the last frame discord.py sends until feed()
                    self.pauses += 1
                    self._player.pause()
                return SILENCE_FRAME
            frame = bytes(self._buffer[self._offset : self._offset + DISCORD_FRAME_BYTES])
            self._offset += DISCORD_FRAME_BYTES
            self._bytes_read += DISCORD_FRAME_BYTES
            if self._offset >= _COMPACT_BYTES or self._offset == len(self._buffer):
                del self._buffer[: self._offset]
                self._offset = 0
            while self._pending_turns and self._bytes_read > self._pending_turns[0][0]:
                self._latencies.append(time.monotonic() - self._pending_turns.popleft()[1])
            return frame

    @property
    def buffered_ms(self) -> float:
        """Audio queued and not yet read, in milliseconds."""
        with self._resample_lock:
            self._convert_unconverted()
        with self._lock:
            return DISCORD.ms_for_bytes(len(self._buffer) - self._offset)

    @property
    def is_paused(self) -> bool:
        """True while the player is paused because there is nothing to play."""
        with self._lock:
            return self._paused

    @property
    def is_playing(self) -> bool:
        """True while a turn is arriving or its audio is still queued."""
        with self._lock:
            return self._turn_open or len(self._buffer) > self._offset or bool(self._unconverted)

    @property
    def first_frame_latencies(self) -> list[float]:
        """Seconds from each turn's first fed chunk to its first audio frame leaving read(), oldest first."""
        with self._lock:
            return list(self._latencies)

    def is_opus(self) -> bool:
        """We hand discord.py PCM; it encodes."""
        return False

    def close(self) -> None:
        """Stop for good: read() returns b"" from now on, which ends discord.py's player."""
        with self._lock:
            self._closed = True
            self._unconverted.clear()
            self._queued_in_bytes = 0
            self._buffer.clear()
            self._offset = 0
            self._turn_open = False
            self._pending_turns.clear()

    def cleanup(self) -> None:
        """discord.py calls this when a player playing the source itself stops; players should get a `tap()`."""
        self.close()

    def tap(self) -> PlaybackTap:
        """A fresh source for one voice client's player; the previous tap stops feeding its player."""
        with self._lock:
            if self._tap is not None:
                self._tap.detach()
            self._tap = PlaybackTap(self)
            return self._tap


class PlaybackTap(discord.AudioSource):
    """What one discord.py player reads: the shared `PlaybackSource`'s frames until detached.

    Its `cleanup()` (called by that player's thread as it ends) detaches only this tap: the conversation's
    audio, and the player of the next voice connection, are untouched.
    """

    def __init__(self, playback: PlaybackSource) -> None:
        self.playback = playback
        self._detached = threading.Event()

    def read(self) -> bytes:
        """The shared source's next frame; b"" once detached, which ends this tap's player."""
        if self._detached.is_set():
            return b""
        return self.playback.read()

    def is_opus(self) -> bool:
        return False

    def detach(self) -> None:
        self._detached.set()

    @property
    def detached(self) -> bool:
        return self._detached.is_set()

    def cleanup(self) -> None:
        """discord.py calls this when this tap's player stops: detach, leave the shared audio alone."""
        self.detach()

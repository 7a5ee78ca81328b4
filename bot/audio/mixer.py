"""One 16 kHz mono timeline for Gemini Live out of every speaking kid's stream.

Runs on the event loop only (the sink thread hands chunks over with `call_soon_threadsafe`), so it
has no locks. Input and output are `LIVE_INPUT` PCM: 16 kHz mono s16le; output frames are 20 ms.

Jitter policy (the choice the pump relies on). Discord packets arrive 20 ms apart give or take
network jitter, and soxr emits uneven chunks (HQ: ~30 ms bursts every other packet), so at any tick a
steadily-speaking kid may hold less than a frame. A *playing* speaker (one that contributed to the
previous frame) with a partial frame whose last push is younger than `jitter_ms` (40 ms) holds the
whole mix: `pull` returns None and the audio waits for the rest. Waiting delays delivery but never
puts zeros into the speech; each hold grows that speaker's standing queue by one frame, which then
absorbs the jitter, so a steady stream settles with no gaps. Simulated with real HQ soxr chunks
arriving 10–30 ms apart, audio waits 27–40 ms on average in the mixer (max ~65 ms for the last
sample of a soxr burst); soxr's ~30 ms bursts account for about half of that. Only when
the last push is older than `jitter_ms` is the remainder padded with zeros (the talk spurt ended).
A speaker who has not started yet simply joins once a whole frame is queued; it never holds others.
Once a speaker's last `STEADY_MIN_GAPS` push intervals are known, the hold shrinks to the worst of
the last `STEADY_WINDOW` plus `STEADY_MARGIN_S` (~30 ms for packets 20 ± 1 ms apart), which is what
the end of every talk spurt waits before Live gets its last samples.

End of speech: Discord sends nothing during silence, but Live's voice activity detection must hear
the speech end. After the last voiced frame the mixer emits `tail_ms` of silence (counted in audio
sent, not wall time: the VAD judges the audio it receives, even if the pump stalled), then
`STREAM_END` exactly once, then None until someone speaks again (silence costs tokens).

Spurt edges: after each `pull`, `at_spurt_edge` says whether that output starts a talk spurt (a speaker
began contributing whole frames) or ends one (nobody is mid-spurt any more: the last padded remainder,
or the first tail frame after a speaker's packets stopped). The pump passes it to Live as `urgent`, so
the send policy holds only the middle of a spurt, never its first or last frame.

When `pull` holds, `holding` is true and `hold_until` says when the hold gives up. The pump
(`bot.audio.pump_clock`) pulls again as soon as the late audio is pushed or at `hold_until`, whichever
comes first, instead of at its next 20 ms tick: a late packet then costs its own lateness, not a frame of
standing queue, and the end of a spurt reaches Live when the hold gives up, not up to a tick later.
If the pump falls behind it may call `pull` again at once while `queued_ms` exceeds ~40 ms.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from bot.audio.formats import FRAME_MS, LIVE_INPUT, LIVE_INPUT_FRAME_BYTES

FRAME_BYTES = LIVE_INPUT_FRAME_BYTES  # 640: 20 ms of 16 kHz mono s16le
SILENCE_FRAME = bytes(FRAME_BYTES)
DEFAULT_TAIL_MS = 500
DEFAULT_JITTER_MS = 40
DEFAULT_QUEUE_CAP_MS = 500
ACTIVITY_GAP_S = 0.3  # pushes closer than this extend one activity interval
# Less speech than one frame inside a window is the edge of a neighbouring turn, not speech in this one: a
# child turn ends when its last transcript arrives, which can be a hair before that kid's last frame does.
MIN_SPOKEN_S = FRAME_MS / 1000
ACTIVITY_MIN_RMS = 30.0  # about -61 dBFS: decoded comfort noise does not count as speech
INT16_MAX = 32767
STEADY_WINDOW = 16  # push intervals remembered per speaker
STEADY_MIN_GAPS = 8  # until this many were seen, a partial frame waits the full jitter_ms
STEADY_MARGIN_S = 0.010  # a steady speaker's partial frame waits its worst recent interval plus this
MAX_CONSECUTIVE_HOLDS = 3  # a speaker whose packets come but whose audio does not is not waited for forever
LIMITER_KNEE = 24_576  # 0.75 of full scale; above it the mix bends smoothly towards full scale


class StreamEnd:
    """Marker returned once by `Mixer.pull` after the silence tail: send audio_stream_end=True."""

    _instance: StreamEnd | None = None

    def __new__(cls) -> StreamEnd:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "STREAM_END"


STREAM_END = StreamEnd()


@dataclass(slots=True)
class _Speaker:
    """One speaker's FIFO of 16 kHz mono bytes, when it last received a packet, and how steadily."""

    queue: bytearray = field(default_factory=bytearray)
    last_push: float = float("-inf")
    playing: bool = False  # contributed to the previous frame: mid talk spurt
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=STEADY_WINDOW))  # push intervals this spurt

    def note_push(self, now: float, jitter_s: float) -> None:
        gap = now - self.last_push
        if gap < jitter_s:
            self.gaps.append(gap)
        else:
            self.gaps.clear()  # a new spurt (or a lost packet): start judging steadiness again
        self.last_push = now

    def hold_s(self, jitter_s: float) -> float:
        """How long a partial frame waits: `jitter_s`, or less once the packets have come steadily."""
        if len(self.gaps) < STEADY_MIN_GAPS:
            return jitter_s
        return min(jitter_s, max(self.gaps) + STEADY_MARGIN_S)

    def hold_deadline(self, jitter_s: float) -> float:
        """When a partial frame stops waiting for the rest (one expression for both sides of the test, so a
        pull at exactly this time never finds the hold both over and not over)."""
        return self.last_push + self.hold_s(jitter_s)


class Mixer:
    """Mix per-speaker 16 kHz mono streams into 20 ms frames for Gemini Live; remember who spoke when."""

    def __init__(
        self,
        *,
        tail_ms: int = DEFAULT_TAIL_MS,
        jitter_ms: int = DEFAULT_JITTER_MS,
        queue_cap_ms: int = DEFAULT_QUEUE_CAP_MS,
    ) -> None:
        self.tail_ms = tail_ms
        self.jitter_s = jitter_ms / 1000
        self._cap_bytes = LIVE_INPUT.bytes_for_ms(queue_cap_ms)
        self._speakers: dict[int, _Speaker] = {}
        self._activity: dict[int, list[list[float]]] = {}
        self._tail_left_ms = 0  # silence still owed to Live's VAD
        self._stream_open = False  # voiced audio was sent since the last STREAM_END
        self._holds = 0  # consecutive pulls that waited for a late speaker
        self._mid_spurt = False  # some speaker contributed a whole frame to the last output
        self.at_spurt_edge = False  # the last output started or ended a talk spurt (see the module docstring)
        self.holding = False  # the last pull waited for a late speaker
        self.hold_until = float("inf")  # when that wait gives up (monotonic), while holding
        self.frames_out = 0
        self.silence_frames_out = 0
        self.stream_ends = 0
        self.dropped_ms = 0.0
        self.active_speakers = 0

    def push(self, user_id: int, pcm16k: bytes, now: float) -> None:
        """Queue a speaker's next chunk; an empty chunk still says "this speaker's packets keep coming"."""
        if len(pcm16k) % LIVE_INPUT.bytes_per_frame:
            raise ValueError(f"16 kHz mono s16le needs whole 2-byte samples; got {len(pcm16k)} bytes")
        speaker = self._speakers.get(user_id)
        if speaker is None:
            speaker = self._speakers[user_id] = _Speaker()
        speaker.note_push(now, self.jitter_s)
        if not pcm16k:
            return
        speaker.queue += pcm16k
        overflow = len(speaker.queue) - self._cap_bytes
        if overflow > 0:
            del speaker.queue[:overflow]
            self.dropped_ms += LIVE_INPUT.ms_for_bytes(overflow)
        if _is_voiced(pcm16k):
            self._record_activity(user_id, now - LIVE_INPUT.ms_for_bytes(len(pcm16k)) / 1000, now)

    def pull(self, now: float) -> bytes | StreamEnd | None:
        """Next 20 ms for Live: mixed speech, tail silence, STREAM_END once, or None (send nothing)."""
        self.hold_until = self._hold_deadline(now)
        self.holding = self.hold_until < float("inf")
        if self.holding:
            self._holds += 1
            self.at_spurt_edge = False
            return None
        self._holds = 0
        frames: list[bytes] = []
        for speaker in self._speakers.values():
            queued = len(speaker.queue)
            speaker.playing = queued >= FRAME_BYTES
            if speaker.playing:
                frames.append(bytes(speaker.queue[:FRAME_BYTES]))
                del speaker.queue[:FRAME_BYTES]
            elif queued and now >= speaker.hold_deadline(self.jitter_s):
                frames.append(bytes(speaker.queue) + bytes(FRAME_BYTES - queued))  # the spurt ended
                speaker.queue.clear()
        mid_spurt = any(speaker.playing for speaker in self._speakers.values())
        self.at_spurt_edge, self._mid_spurt = mid_spurt != self._mid_spurt, mid_spurt
        if frames:
            return self._emit_voice(frames)
        return self._emit_idle()

    def _hold_deadline(self, now: float) -> float:
        """A speaker mid spurt is short of a frame but its packets are still coming: hold the mix until the
        earliest such speaker's hold gives up (inf: no hold)."""
        if self._holds >= MAX_CONSECUTIVE_HOLDS:
            return float("inf")
        deadlines = (speaker.hold_deadline(self.jitter_s) for speaker in self._speakers.values()
                     if speaker.playing and len(speaker.queue) < FRAME_BYTES)
        return min((deadline for deadline in deadlines if now < deadline), default=float("inf"))

    def remove(self, user_id: int) -> None:
        """Forget a speaker who left; queued audio is dropped, activity history stays for transcripts."""
        speaker = self._speakers.pop(user_id, None)
        if speaker is not None and speaker.queue:
            self.dropped_ms += LIVE_INPUT.ms_for_bytes(len(speaker.queue))

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing owed (no tail, no STREAM_END): `pull` returns None until a `push`."""
        return not self._stream_open and self._tail_left_ms <= 0 and not any(s.queue for s in self._speakers.values())

    @property
    def queued_ms(self) -> float:
        """The longest speaker queue: the latency the mixer currently adds."""
        longest = max((len(s.queue) for s in self._speakers.values()), default=0)
        return LIVE_INPUT.ms_for_bytes(longest)

    def speakers_between(self, start: float, end: float) -> list[int]:
        """Who spoke (at least `MIN_SPOKEN_S`) in [start, end] on the monotonic clock, most speech first."""
        totals: dict[int, float] = {}
        for user_id, intervals in self._activity.items():
            spoken = sum(max(0.0, min(e, end) - max(s, start)) for s, e in intervals)
            if spoken >= MIN_SPOKEN_S:
                totals[user_id] = spoken
        return sorted(totals, key=lambda user_id: totals[user_id], reverse=True)

    def forget_before(self, t: float) -> None:
        """Drop activity that ended before `t`, so a long session keeps bounded memory."""
        for user_id in list(self._activity):
            kept = [interval for interval in self._activity[user_id] if interval[1] >= t]
            if kept:
                self._activity[user_id] = kept
            else:
                del self._activity[user_id]

    def _emit_voice(self, frames: list[bytes]) -> bytes:
        self.active_speakers = len(frames)
        self._tail_left_ms = self.tail_ms
        self._stream_open = True
        self.frames_out += 1
        if len(frames) == 1:
            return frames[0]
        return _mix(frames)

    def _emit_idle(self) -> bytes | StreamEnd | None:
        self.active_speakers = 0
        if self._tail_left_ms > 0:
            self._tail_left_ms -= FRAME_MS
            self.frames_out += 1
            self.silence_frames_out += 1
            return SILENCE_FRAME
        if self._stream_open:
            self._stream_open = False
            self.stream_ends += 1
            return STREAM_END
        return None

    def _record_activity(self, user_id: int, start: float, end: float) -> None:
        intervals = self._activity.setdefault(user_id, [])
        if intervals and start - intervals[-1][1] <= ACTIVITY_GAP_S:
            intervals[-1][1] = max(intervals[-1][1], end)
        else:
            intervals.append([start, end])


def _is_voiced(pcm16k: bytes) -> bool:
    """RMS at or above ACTIVITY_MIN_RMS, without a square root (an int64 dot product is the cheap way)."""
    values = np.frombuffer(pcm16k, dtype="<i2").astype(np.int64)
    return int(values @ values) >= ACTIVITY_MIN_RMS**2 * len(values)


def _mix(frames: list[bytes]) -> bytes:
    """Sum in int32; if the sum would clip, bend the peaks with a soft knee instead of wrapping.

    Runs on the event loop thread, so every numpy call works on one 320-sample frame: numpy releases
    the GIL for loops over 500 elements, and with the voice threads running, getting it back costs the
    loop up to a switch interval (~1 ms per mix measured, against ~8 µs this way).
    """
    total = np.frombuffer(frames[0], dtype="<i2").astype(np.int32)
    for frame in frames[1:]:
        total += np.frombuffer(frame, dtype="<i2")
    if int(total.max()) <= INT16_MAX and int(total.min()) >= -INT16_MAX:
        return total.astype("<i2").tobytes()
    signed = total.astype(np.float32)
    magnitude = np.abs(signed)
    headroom = INT16_MAX - LIMITER_KNEE
    knee_curve = LIMITER_KNEE + headroom * np.tanh((magnitude - LIMITER_KNEE) / headroom)
    bent = np.where(magnitude > LIMITER_KNEE, knee_curve, magnitude)
    return np.copysign(np.minimum(bent, INT16_MAX), signed).astype("<i2").tobytes()

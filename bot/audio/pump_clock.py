"""When the input pump takes audio from the mixer: pure timing, shared by `bot.input_pump.InputPump.run`
and `bench.turn_taking` (which drives it on a virtual clock), so the bench measures what the bot does.

The pump ticks every 20 ms on an absolute schedule while anyone talks (it rests, in the bot, while the
mixer is idle). At each tick it pulls one frame, and more at once while the mixer holds more than
`CATCH_UP_MS` (after a stall, or a burst). When the pull *holds* (a speaker mid spurt is short of a frame and their
packets are still coming; `bot.audio.mixer`), the next pull is not the next tick but the moment that
speaker's audio arrives, or the hold's deadline, whichever comes first — waiting a whole tick for a packet
1 ms late made every hold a frame of standing latency, and made the end of a spurt wait up to a tick past
its hold. After such a hold the ticks go on from the pull that ended it, `RETIME_MARGIN_S` later than the
packets, so a stream whose packets drift against the tick does not hold at every tick.

Jitter is absorbed by those holds, so nothing needs to stand in the mixer's queue: every whole frame queued
goes at once (`CATCH_UP_MS`). With the old "more than 40 ms" a spurt's audio could stand two frames deep from
its first packets (soxr's first burst) to its end, and its last audio waited for them: traced on the real path, a
spurt ending on that queue reached Live ~41 ms after its last packet, one ending on a partial frame ~32 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.audio.formats import FRAME_MS
from bot.audio.mixer import Mixer, StreamEnd

CATCH_UP_MS = FRAME_MS  # while a whole frame is still queued after a pull, it goes at once, not a tick later
RETIME_MARGIN_S = 0.003  # after a hold, ticks land this long after the packets that ended it
STALL_S = 0.1  # a tick this late means the loop stalled: start the schedule again instead of bursting

Output = bytes | StreamEnd


@dataclass(slots=True)
class PumpClock:
    """The pump's schedule: `pull()` what to send now, then `next_wake()` says when to pull again."""

    period: float = FRAME_MS / 1000
    next_tick: float = 0.0
    _after_hold: bool = False

    def restart(self, now: float) -> None:
        """The pump starts (or wakes from rest): the first tick is now."""
        self.next_tick = now
        self._after_hold = False

    def pull(self, mixer: Mixer, now: float) -> list[tuple[Output, bool]]:
        """The mixer's outputs to send now, each with its `at_spurt_edge` (send it urgently)."""
        out: list[tuple[Output, bool]] = []
        item = mixer.pull(now)
        while item:  # None (nothing, or holding) and b"" end it; STREAM_END is sent
            out.append((item, mixer.at_spurt_edge))
            if mixer.queued_ms < CATCH_UP_MS:
                break
            item = mixer.pull(now)
        return out

    def next_wake(self, mixer: Mixer, now: float) -> tuple[float, bool]:
        """(when to pull next, whether a kid's audio pushed before then should end the wait at once)."""
        if mixer.holding:
            self._after_hold = True
            return mixer.hold_until, True
        if self._after_hold:  # the hold ended with this pull: tick on from here
            self._after_hold = False
            self.next_tick = now + RETIME_MARGIN_S
        self.next_tick += self.period
        if self.next_tick < now - STALL_S:
            self.next_tick = now + self.period
        return self.next_tick, False

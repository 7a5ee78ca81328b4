"""PumpClock: 20 ms ticks, a hold ended by the late audio or its deadline, catching up after a stall."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bot.audio.convert import Downsampler
from bot.audio.formats import DISCORD_FRAME_BYTES
from bot.audio.mixer import FRAME_BYTES, SILENCE_FRAME, STREAM_END, Mixer
from bot.audio.pump_clock import RETIME_MARGIN_S, PumpClock
from tests.signals import tone

FRAME_S = 0.020


def run(pushes: list[tuple[float, bytes]], until: float, mixer: Mixer | None = None
        ) -> tuple[Mixer, list[tuple[float, bytes | object, bool]], list[float]]:
    """Drive a mixer with the clock on a virtual timeline the way the pump does; (mixer, sent, pull times)."""
    mixer = mixer or Mixer(tail_ms=100)
    clock, sent, pulls, i = PumpClock(), [], [], 0
    now = pushes[0][0]
    clock.restart(now)
    while now < until:
        while i < len(pushes) and pushes[i][0] <= now:
            mixer.push(1, pushes[i][1], pushes[i][0])
            i += 1
        if mixer.idle and i < len(pushes):
            now = pushes[i][0]
            clock.restart(now)
            continue
        pulls.append(now)
        sent += [(now, out, urgent) for out, urgent in clock.pull(mixer, now)]
        wake_at, on_audio = clock.next_wake(mixer, now)
        next_push = pushes[i][0] if i < len(pushes) else float("inf")
        now = next_push if on_audio and next_push < wake_at else wake_at
    return mixer, sent, pulls


def test_ticks_are_20_ms_apart_while_nothing_holds():
    speech = tone(300, 16_000, 0.2, 0.3)
    pushes = [(k * FRAME_S, speech[k * FRAME_BYTES:(k + 1) * FRAME_BYTES]) for k in range(10)]
    _, sent, pulls = run(pushes, 0.18)
    assert np.allclose(np.diff(pulls), FRAME_S)
    assert b"".join(out for _, out, _ in sent) == speech[:9 * FRAME_BYTES]


def test_a_late_packet_is_pulled_when_it_comes_not_a_tick_later():
    """A packet 5 ms late: the tick holds, the packet's arrival ends the hold at once, and the ticks go on from
    there (a little after the packets), so the stream is no later than that packet was."""
    speech = tone(300, 16_000, 0.3, 0.3)
    frames = [speech[k * FRAME_BYTES:(k + 1) * FRAME_BYTES] for k in range(12)]
    pushes = [(k * FRAME_S + (0.005 if k >= 6 else 0.0), frames[k]) for k in range(12)]
    pushes[0] = (0.0, frames[0] + frames[1][:FRAME_BYTES // 2])  # a half frame standing: the mix can hold
    pushes[1] = (FRAME_S, frames[1][FRAME_BYTES // 2:])
    _, sent, pulls = run(pushes, 0.3)
    late = 6 * FRAME_S + 0.005
    assert late in pulls  # pulled when the late packet came…
    assert pulls[pulls.index(late) + 1] == pytest.approx(late + RETIME_MARGIN_S + FRAME_S)  # …then ticks go on
    voice = b"".join(out for _, out, _ in sent if isinstance(out, bytes) and out != SILENCE_FRAME)
    assert voice.startswith(speech[:11 * FRAME_BYTES])  # nothing inserted, nothing lost


def test_the_end_of_a_spurt_goes_when_the_hold_gives_up_as_an_edge():
    """The spurt's last partial frame is sent (padded, urgent) at its hold's deadline, not at the next tick."""
    speech = tone(300, 16_000, 0.5, 0.3)
    chunk = 600  # short of a frame: a remainder is left at the end
    pushes = [(k * FRAME_S, speech[k * chunk:(k + 1) * chunk]) for k in range(12)]
    mixer, sent, _ = run(pushes, 0.6)
    last_push = 11 * FRAME_S
    end = next((t, urgent) for t, out, urgent in sent if isinstance(out, bytes) and out.endswith(b"\0\0")
               and out != SILENCE_FRAME)
    assert end[0] == pytest.approx(last_push + 0.030, abs=0.001) and end[1] is True
    assert [out for _, out, _ in sent].count(STREAM_END) == 1 and mixer.idle


def test_a_backlog_is_sent_at_once():
    """After a stall (100 ms queued at one tick), every whole frame goes in that tick."""
    speech = tone(300, 16_000, 0.1, 0.3)
    mixer = Mixer()
    mixer.push(1, speech, 0.0)
    clock = PumpClock()
    clock.restart(0.0)
    outs = clock.pull(mixer, 0.0)
    assert len(outs) == 5 and outs[0][1] is True and mixer.queued_ms == 0


def test_nothing_stands_in_the_queue_behind_a_spurts_first_burst():
    """soxr's first output of a spurt is a 600-sample burst; the queue it leaves is drained to under a frame, so
    the spurt's last audio is not held behind frames that only stood there."""
    burst = tone(300, 16_000, 0.06, 0.3)  # 60 ms at once, then 20 ms packets
    speech = tone(300, 16_000, 0.3, 0.3)
    pushes = [(0.0, burst)] + [(k * FRAME_S, speech[k * FRAME_BYTES:(k + 1) * FRAME_BYTES]) for k in range(1, 10)]
    _, sent, _ = run(pushes, 0.3)
    last_voice = max(t for t, out, _ in sent if isinstance(out, bytes) and out != SILENCE_FRAME)
    assert last_voice <= 9 * FRAME_S + 0.001  # the last packet's frame goes at the tick it came, not 2 ticks on


def test_real_soxr_chunks_with_jitter_arrive_unbroken_and_sooner_than_on_ticks_alone():
    """Real input (LQ soxr's uneven chunks), packets 0–10 ms late: every sample arrives, none added, and audio
    waits less in the mixer than with the pump before (pulls only on its 20 ms ticks, catching up past 40 ms)."""
    rng = random.Random(7)
    downsampler = Downsampler()
    source = tone(440, 48_000, 4.0, 0.3, channels=2)
    pushes = [(k * FRAME_S + rng.uniform(0, 0.010),
               downsampler.process(source[k * DISCORD_FRAME_BYTES:(k + 1) * DISCORD_FRAME_BYTES])) for k in range(200)]
    pushes.sort(key=lambda p: p[0])
    pushed = b"".join(chunk for _, chunk in pushes)
    _, sent, _ = run(pushes, 4.5)
    voice = b"".join(out for _, out, _ in sent if isinstance(out, bytes) and out != SILENCE_FRAME)
    assert voice[:len(pushed)] == pushed

    def mean_wait(sent: list[tuple[float, object, bool]]) -> float:
        push_times = np.concatenate([np.full(len(c) // 2, t) for t, c in pushes])
        send_times = np.concatenate([np.full(len(o) // 2, t) for t, o, _ in sent
                                     if isinstance(o, bytes) and o != SILENCE_FRAME])
        return float((send_times[:len(push_times)] - push_times).mean())

    ticks_only = []  # the pump before: a pull every 20 ms whatever the mixer said, catching up past 40 ms
    mixer, i = Mixer(tail_ms=100), 0
    for j in range(230):
        now = j * FRAME_S + 0.007
        while i < len(pushes) and pushes[i][0] <= now:
            mixer.push(1, pushes[i][1], pushes[i][0])
            i += 1
        outs = [mixer.pull(now)]
        while mixer.queued_ms > 40 and outs[-1] is not None:
            outs.append(mixer.pull(now))
        ticks_only += [(now, out, False) for out in outs if out]
    assert mean_wait(sent) < mean_wait(ticks_only) - 0.005

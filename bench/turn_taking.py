"""Turn-taking for kids: how often a pause cuts a child's turn short, and how long a finished child waits.

Run: `python -m bench.turn_taking` (or `scripts/bench turn_taking`). No network, no real time: a virtual
clock drives the bot's real `Mixer` (jitter hold, silence tail, STREAM_END) with the pump's own schedule
(`bot.audio.pump_clock.PumpClock`: 20 ms ticks, a hold ended by the late packet or its deadline, rest while
idle) as `InputPump.run` does, and the frames it emits go to the fake Live server's voice activity
detection (`tests.fake_live_model.ActivityDetector`, the rule the truthful fake ends spoken turns by:
`audioStreamEnd`, or `silence_ms` of silence in the audio received).

Scripted speech: each utterance is 1–4 phrases of 0.4–2.0 s of voiced audio, packets every 20 ms with
±4 ms jitter, separated by mid-sentence pauses (no packets: Discord sends nothing while a kid is quiet).
Two scripts, seeded so every run is the same:
* younger (4–6): 1–3 pauses per utterance, each 0.5–1.5 s;
* older (7–14): 0–2 pauses per utterance, each 0.5–1.0 s.

Per setting it prints: cut early = utterances whose turn ended during a pause (the tutor would answer half a
sentence, then get talked over); wait = from the child's last word to the end of the turn, median and p90,
over the utterances not cut (the reply's own latency comes on top). Settings: the mixer's silence tail
(then `audioStreamEnd`), and leaving the end to the server's VAD (the bot keeps sending silence) at 2 s
(what 3.1 does whatever `silence_duration_ms` says, unverified for 3.8) and 1 s (if 3.8 honours it).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.audio.formats import FRAME_MS, LIVE_INPUT_FRAME_BYTES
from bot.audio.mixer import Mixer, StreamEnd
from bot.audio.pump_clock import PumpClock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fake_live_model import ActivityDetector

KID = 1
SERVER_VAD_S = 2.0  # the truthful fake's default (3.1's observed ~2 s)
AFTER_S = 6.0  # how long to follow an utterance after its last word


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    pauses: tuple[int, int]  # how many mid-sentence pauses per utterance (inclusive)
    pause_s: tuple[float, float]


SCRIPTS = (Script("younger (4–6)", (1, 3), (0.5, 1.5)), Script("older (7–14)", (0, 2), (0.5, 1.0)))


@dataclass(frozen=True, slots=True)
class Setting:
    label: str
    tail_ms: int
    server_silence_s: float


TAILS_MS = (500, 800, 1000, 1100, 1200, 1300, 1500, 1600, 1700, 1800)
MAX_CUT_PERCENT = 1.0  # the default is the shortest tail that cuts at most this many utterances…
MARGIN_MS = 200  # …plus this, for pauses a little longer than the script's
SETTINGS = (
    *(Setting(f"tail {ms} ms", ms, SERVER_VAD_S) for ms in TAILS_MS),
    Setting("server VAD, 2 s", 10_000, 2.0),
    Setting("server VAD, 1 s", 10_000, 1.0),
)


def utterance(rng: random.Random, script: Script) -> list[tuple[float, float]]:
    """Speech segments (start, end) in seconds from 0."""
    segments, t = [], 0.0
    for i in range(rng.randint(*script.pauses) + 1):
        if i:
            t += rng.uniform(*script.pause_s)
        length = rng.uniform(0.4, 2.0)
        segments.append((t, t + length))
        t += length
    return segments


def voiced_frame(rng: random.Random) -> bytes:
    noise = np.array([rng.gauss(0, 3000) for _ in range(LIVE_INPUT_FRAME_BYTES // 2)])
    return np.clip(noise, -32767, 32767).astype("<i2").tobytes()


@dataclass(frozen=True, slots=True)
class Outcome:
    cut_early: bool
    wait_s: float | None  # last word → end of turn, if not cut


def run_one(segments: list[tuple[float, float]], setting: Setting, rng: random.Random) -> Outcome:
    """One utterance through the real mixer (virtual 20 ms pump) into the server's activity detection."""
    mixer = Mixer(tail_ms=setting.tail_ms)
    server = ActivityDetector(setting.server_silence_s * 1000)
    frame = voiced_frame(rng)
    packets = sorted(start + k * FRAME_MS / 1000 + rng.uniform(-0.004, 0.004)
                     for start, end in segments for k in range(int((end - start) * 1000 / FRAME_MS)))
    last_word = packets[-1]
    clock, now, i = PumpClock(), packets[0], 0
    clock.restart(now)
    while now < last_word + AFTER_S:
        while i < len(packets) and packets[i] <= now:
            mixer.push(KID, frame, packets[i])
            i += 1
        if mixer.idle and i < len(packets):  # the pump rests until the next packet
            now = packets[i]
            clock.restart(now)
            continue
        for out, _urgent in clock.pull(mixer, now):
            ended = server.end() if isinstance(out, StreamEnd) else server.feed(out)
            if ended == "end":
                if now < last_word:
                    return Outcome(True, None)
                return Outcome(False, now - last_word)
        wake_at, on_audio = clock.next_wake(mixer, now)
        next_packet = packets[i] if i < len(packets) else float("inf")
        now = next_packet if on_audio and next_packet < wake_at else wake_at
    return Outcome(False, None)  # never ended (cannot happen with a finite tail)


def measure(script: Script, setting: Setting, count: int, seed: int) -> tuple[float, float, float]:
    """(cut-early %, median wait s, p90 wait s) over `count` utterances."""
    rng = random.Random(seed)
    outcomes = [run_one(utterance(rng, script), setting, rng) for _ in range(count)]
    waits = sorted(o.wait_s for o in outcomes if o.wait_s is not None)
    cut = 100 * sum(o.cut_early for o in outcomes) / count
    p90 = waits[min(len(waits) - 1, int(0.9 * len(waits)))] if waits else float("nan")
    return cut, statistics.median(waits) if waits else float("nan"), p90


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.turn_taking", description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=300, help="per script and setting (default 300)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    print(f"{args.utterances} scripted utterances per row; wait = last word → end of turn (reply latency extra)\n")
    header = f"{'setting':<18}" + "".join(f"| {s.name:^28} " for s in SCRIPTS)
    print(header)
    print(f"{'':<18}" + "".join(f"| {'cut early':>9} {'wait p50':>8} {'p90':>8} " for _ in SCRIPTS))
    print("-" * len(header))
    safe: dict[str, int] = {}
    for setting in SETTINGS:
        row = f"{setting.label:<18}"
        for script in SCRIPTS:
            cut, p50, p90 = measure(script, setting, args.utterances, args.seed)
            row += f"| {cut:8.1f}% {p50:7.2f}s {p90:7.2f}s "
            if setting.tail_ms in TAILS_MS and cut <= MAX_CUT_PERCENT:
                safe.setdefault(script.name, setting.tail_ms)
        print(row)
    print(f"\nchosen default = shortest tail cutting ≤ {MAX_CUT_PERCENT:g} % of utterances, + {MARGIN_MS} ms:")
    for script in SCRIPTS:
        tail = safe.get(script.name)
        print(f"  {script.name}: " + (f"{tail + MARGIN_MS} ms" if tail is not None else "none of the tails"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

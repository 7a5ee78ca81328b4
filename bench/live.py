"""The Live side's send policy, side by side: messages, CPU per session, reply and barge-in delay.

Run: `python -m bench.live` (or `scripts/bench live`); `--guilds 1,5,20 --reps 3 --seconds 9`,
`--chunks 40,60,100` (our policy's sizes to try).

Workload (one per session, N sessions at once, the fake Live server in its own process so this process's
CPU is the bot's Live side alone): every 4.5 s a kid talks 1.5 s (75 frames of 20 ms, handed to
`LiveSession.send_audio` on a 20 ms tick as the pump does), then the mixer's 0.5 s silence tail and
`end_audio_stream()`; the fake answers 200 ms later with 1.5 s of audio that the session's events are
read for. Variants, each a real `LiveSession` with the real SDK, in turns within one run:

* per frame — `input_chunk_ms=20`: every frame its own message (what the bot did before);
* 50 ms fixed — LiveKit Agents' Google realtime plugin re-chunks input to 50 ms (`AudioByteStream(16000,
  1, 16000 // 20)`) and sends each chunk as it fills; emulated on our sender with no spurt edges;
* ours N ms — the bot's policy: the first and last frame of a spurt urgent (as the mixer marks them),
  the middle in N ms messages, `audio_stream_end` at once.

Figures per variant (median over `--reps` runs): messages/s and CPU (% of a core) per session; onset
delay — a spurt's first frame handed over → its message written to the socket (what a barge-in waits
for); end delay — the spurt's last voiced frame handed over → written; reply latency — the session's own
figure, `audio_stream_end` sent → first reply audio (the fake's 200 ms think time included).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from bench import wire
from bench.e2e import pct, serve_fake_live, settings_for
from bot.live.options import LiveConnectOptions
from bot.live.session import LiveSession

FRAME_S = 0.02
TALK_FRAMES, TAIL_FRAMES, CYCLE_S = 75, 25, 4.5
FRAME_BYTES = 640


@dataclass(frozen=True)
class Variant:
    name: str
    chunk_ms: float
    edges: bool  # the first and last voiced frame are sent urgent


@dataclass
class Sample:
    cpu_percent: float
    messages_per_s: float
    onset_ms: list[float]
    end_ms: list[float]
    reply_ms: list[float]


@dataclass
class Row:
    variant: Variant
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples)

    def pooled(self, attr: str) -> list[float]:
        return [v for s in self.samples for v in getattr(s, attr)]


wire.install()


# ----- one session's kid --------------------------------------------------------------------------------


def voiced_frames(seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    t = np.arange(TALK_FRAMES * 320) / 16_000
    voice = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 8)) * 4000 + rng.normal(0, 300, t.size)
    pcm = np.clip(voice, -32768, 32767).astype("<i2").tobytes()
    return [pcm[i * FRAME_BYTES:(i + 1) * FRAME_BYTES] for i in range(TALK_FRAMES)]


async def kid(live: LiveSession, variant: Variant, frames: list[bytes], offset: float, until: float,
              onsets: list[tuple[float, int]], ends: list[tuple[float, int]]) -> None:
    """Talk spurts on a 20 ms tick; stamps each spurt's first and last voiced frame (time, bytes handed)."""
    silence = bytes(FRAME_BYTES)
    start = time.monotonic() + offset
    cycle, handed = 0, 0
    while start + cycle * CYCLE_S < until:
        tick = start + cycle * CYCLE_S
        for i in range(TALK_FRAMES + TAIL_FRAMES):
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            edge = variant.edges and i in (0, TALK_FRAMES - 1)
            handed += FRAME_BYTES
            if i == 0:
                onsets.append((time.monotonic(), handed))
            elif i == TALK_FRAMES - 1:
                ends.append((time.monotonic(), handed))
            live.send_audio(frames[i] if i < TALK_FRAMES else silence, urgent=edge)
            tick += FRAME_S
        live.end_audio_stream()
        cycle += 1


async def drain(live: LiveSession) -> None:
    async for _ in live.events():
        pass


async def run_once(n: int, variant: Variant, seconds: float, settings: Any) -> Sample:
    options = LiveConnectOptions(input_chunk_ms=variant.chunk_ms)
    sessions = [LiveSession(settings, system_instruction="bench", connect_options=options) for _ in range(n)]
    await asyncio.gather(*(s.start() for s in sessions))
    consumers = [asyncio.create_task(drain(s)) for s in sessions]
    await asyncio.sleep(0.5)
    frames = voiced_frames(1)
    onsets: list[list[tuple[float, int]]] = [[] for _ in sessions]
    ends: list[list[tuple[float, int]]] = [[] for _ in sessions]
    messages_before = sum(s.stats.messages_sent for s in sessions)
    until = time.monotonic() + seconds
    cpu0, wall0 = time.process_time(), time.monotonic()
    kids = [asyncio.create_task(kid(s, variant, frames, i * CYCLE_S / n, until, onsets[i], ends[i]))
            for i, s in enumerate(sessions)]
    await asyncio.gather(*kids)
    await asyncio.sleep(0.6)  # the last replies
    wall = time.monotonic() - wall0
    cpu = (time.process_time() - cpu0) / wall * 100 / n
    messages = (sum(s.stats.messages_sent for s in sessions) - messages_before) / wall / n
    onset_ms, end_ms, reply_ms = [], [], []
    for s, starts, stops in zip(sessions, onsets, ends, strict=True):
        genai_session = s._connection.session
        for t, through in starts:
            if (w := wire.written_at(genai_session, through)) is not None:
                onset_ms.append((w - t) * 1000)
        for t, through in stops:
            if (w := wire.written_at(genai_session, through)) is not None:
                end_ms.append((w - t) * 1000)
        reply_ms += list(s.stats.response_latency_ms)
    for task in consumers:
        task.cancel()
    await asyncio.gather(*(s.close() for s in sessions))
    await asyncio.gather(*consumers, return_exceptions=True)
    wire.clear()
    return Sample(cpu, messages, onset_ms, end_ms, reply_ms)


async def run_all(args: argparse.Namespace, server: Any) -> dict[int, list[Row]]:
    settings = settings_for(server)
    variants = [Variant("per frame (before)", 20, edges=True), Variant("50 ms fixed (LiveKit)", 50, edges=False)]
    variants += [Variant(f"ours, {c} ms", float(c), edges=True) for c in args.chunks.split(",")]
    results: dict[int, list[Row]] = {}
    for n in (int(g) for g in args.guilds.split(",")):
        rows = [Row(v) for v in variants]
        for _ in range(args.reps):
            for row in rows:  # in turns, so a busy moment of the shared machine hits every variant alike
                row.samples.append(await run_once(n, row.variant, args.seconds, settings))
        results[n] = rows
    return results


def print_tables(results: dict[int, list[Row]], server_cpu: float) -> None:
    print(f"{'N':>3} {'variant':<24} {'msg/s':>6} {'CPU %/session':>13} {'× before':>8} "
          f"{'onset ms p50/p95':>17} {'end ms p50/p95':>15} {'reply ms p50/p95':>17}")
    for n, rows in results.items():
        before = rows[0].median("cpu_percent")
        for row in rows:
            onset, end, reply = row.pooled("onset_ms"), row.pooled("end_ms"), row.pooled("reply_ms")
            print(f"{n:>3} {row.variant.name:<24} {row.median('messages_per_s'):>6.1f} "
                  f"{row.median('cpu_percent'):>13.2f} {row.median('cpu_percent') / before:>8.2f} "
                  f"{pct(onset, 50):>7.1f} /{pct(onset, 95):>7.1f} {pct(end, 50):>6.1f} /{pct(end, 95):>6.1f} "
                  f"{pct(reply, 50):>7.1f} /{pct(reply, 95):>7.1f}")
        print()
    print(f"(medians of the runs; onset/end/reply pooled over every spurt; fake server {server_cpu:.1f} % of a core"
          " in its own process, not counted)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guilds", default="1,5,20", help="concurrent sessions per row (default 1,5,20)")
    parser.add_argument("--reps", type=int, default=3, help="runs per variant (default 3)")
    parser.add_argument("--seconds", type=float, default=9.0, help="talking time per run (default 9)")
    parser.add_argument("--chunks", default="40,60,100", help="our policy's chunk sizes in ms (default 40,60,100)")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=serve_fake_live, args=(theirs, 0.2, 1500.0), daemon=True)
    child.start()
    server = SimpleNamespace(**ours.recv())
    started = time.monotonic()
    try:
        results = asyncio.run(run_all(args, server))
    finally:
        ours.send("stop")
        report = ours.recv() if ours.poll(10) else {"cpu_s": float("nan")}
        child.join(5)
    elapsed = time.monotonic() - started
    print(f"Live send policy: 1.5 s talk + 0.5 s tail + end every 4.5 s per session, fake think 200 ms,"
          f" {args.seconds:g} s per run, {args.reps} runs per variant; {os.cpu_count()} cores,"
          f" load {os.getloadavg()[0]:.2f}\n")
    print_tables(results, report["cpu_s"] / elapsed * 100)


if __name__ == "__main__":
    main()

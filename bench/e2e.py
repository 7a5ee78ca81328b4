"""End-to-end load: N guilds' real conversations in one process against a fake Gemini Live server.

Run: `python -m bench.e2e` (or `scripts/bench e2e`), `--guilds 1,5,20 --seconds 20 --think-ms 200`.
`--processes 2` runs the same guilds spread over 2 bot processes beside 1 process (`bench.processes`).

Each guild is a real `Conversations.start()` (sink → mixer → LiveSession → playback, real SQLite shared by
all guilds as in the bot) with a `FakeVoiceClient`. Per guild, `--speakers` kids talk in turns (1.5 s of
speech, 3 s pause, offset so they do not overlap): their Opus packets are encoded up front (that is the
kids' clients' work) and decoded in the speaker thread at 20 ms pace (that is voice-recv's work, so it
counts), then written to the sink. One player thread per guild calls `PlaybackSource.read()` every 20 ms
like discord.py's AudioPlayer. The fake server runs in a child process, so this process's CPU time is the
bot's alone (the server's own CPU is printed beside it).

Latency method (documented because it is what the goals are checked on):
* input: the speaker thread stamps the last packet of a talk spurt just before `sink.write`; a LiveSession
  subclass stamps every non-silent frame handed to `send_audio`. Latency = last non-silent hand-over after
  the spurt's end − that stamp (sink → soxr → loop hand-over → mixer jitter hold → pump tick). The
  websocket write after the hand-over runs on the same event loop: its delay is the loop lag, reported too.
* output: `AudioChunk.received_at` of a reply's first chunk (LiveSession stamps it when the frame is
  parsed) → the first non-silent 3840-byte frame a player tick got from `read()` (includes waiting for the
  next 20 ms tick, ~10 ms on average, as in discord.py).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import multiprocessing
import os
import resource
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import discord.opus
import numpy as np

from bot.audio.formats import DISCORD_FRAME_BYTES
from bot.levels import BUILTIN_LEVELS
from bot.live import events as ev
from bot.live.session import LiveSession
from bot.storage import Database, Repository
from bot.tutor import Conversations, StartRequest
from tests.fake_live import FakeLiveServer, make_client_settings
from tests.helpers import FakeVoiceConnector, MockMember, MockVoiceChannel

FRAME_S = 0.02
TALK_S, PAUSE_S = 1.5, 3.0
SILENCE = bytes(DISCORD_FRAME_BYTES)
GOAL_LATENCY_MS = 40.0
GOAL_CORE_PERCENT = 1.0


# ----- the fake Live server, in its own process --------------------------------------------------------


def serve_fake_live(pipe: Any, think_time: float, reply_audio_ms: float) -> None:
    """Child process: run the fake until the parent says stop, then report its CPU seconds and replies."""
    async def main() -> None:
        async with FakeLiveServer(think_time=think_time, reply_audio_ms=reply_audio_ms) as server:
            pipe.send({"url": server.url, "ca_file": str(server.ca_file), "api_key": server.api_key})
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            pipe.send({"cpu_s": usage.ru_utime + usage.ru_stime, "replies": server.replies_sent})
    asyncio.run(main())


class _Env:
    """What `make_client_settings` needs from pytest's monkeypatch, applied to this process."""

    def setenv(self, name: str, value: str) -> None:
        os.environ[name] = value

    def delenv(self, name: str, raising: bool = True) -> None:
        os.environ.pop(name, None)


def settings_for(server: Any) -> Any:
    """Settings pointed at a fake server (an object with url, ca_file and api_key)."""
    return make_client_settings(SimpleNamespace(url=server.url, ca_file=server.ca_file, api_key=server.api_key),
                                _Env())


# ----- instrumentation ----------------------------------------------------------------------------------


class InstrumentedLiveSession(LiveSession):
    """The real LiveSession; stamps voiced input handed to it and the first reply chunk of each turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.voiced_handed_at: list[float] = []
        self.audio_handed = 0
        self.first_chunk_at: list[float] = []

    def send_audio(self, pcm16k: bytes) -> None:
        self.audio_handed += len(pcm16k)
        if pcm16k.strip(b"\0"):
            self.voiced_handed_at.append(time.monotonic())
        super().send_audio(pcm16k)

    async def events(self) -> AsyncIterator[ev.LiveEvent]:
        in_turn = False
        async for event in super().events():
            if isinstance(event, ev.AudioChunk) and not in_turn:
                in_turn = True
                self.first_chunk_at.append(event.received_at)
            elif isinstance(event, ev.TurnComplete | ev.Interrupted):
                in_turn = False
            yield event


def speech_packets(seconds: float, seed: int) -> list[bytes]:
    """Opus packets of a speech-like signal: harmonics at a syllable rhythm plus breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(48_000 * seconds)) / 48_000
    pitch = 150 + 40 * seed % 120
    voice = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 10))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)  # ~4 syllables a second
    mono = np.clip(voice * envelope * 5000 + rng.normal(0, 400, t.size), -32768, 32767).astype("<i2")
    pcm = np.repeat(mono, 2).tobytes()
    encoder = discord.opus.Encoder()
    encoder.set_bitrate(64)
    return [encoder.encode(pcm[i:i + DISCORD_FRAME_BYTES], encoder.SAMPLES_PER_FRAME)
            for i in range(0, len(pcm) - DISCORD_FRAME_BYTES + 1, DISCORD_FRAME_BYTES)]


@dataclass(eq=False)  # threads must stay hashable
class Speaker(threading.Thread):
    """A kid: decode each packet like voice-recv's router, write it to the current sink, 20 ms apart."""

    voice: Any
    member: Any
    packets: list[bytes]
    offset_s: float
    stop: threading.Event
    spurt_ends: list[float] = field(default_factory=list)
    written: int = 0
    talk_s: float = TALK_S
    pause_s: float = PAUSE_S

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        decoder = discord.opus.Decoder()
        next_at = time.monotonic() + self.offset_s
        while not self.stop.is_set():
            time.sleep(max(0.0, next_at - time.monotonic()))
            last = 0.0
            for packet in self.packets[: round(self.talk_s / FRAME_S)]:
                pcm = decoder.decode(packet)
                last = time.monotonic()
                self.voice.sink.write(self.member, SimpleNamespace(pcm=pcm))
                self.written += 1
                next_at += FRAME_S
                time.sleep(max(0.0, next_at - time.monotonic()))
            self.spurt_ends.append(last)
            next_at += self.pause_s


@dataclass(eq=False)
class Player(threading.Thread):
    """discord.py's AudioPlayer: one `read()` per 20 ms tick; stamps each reply's first audible frame."""

    voice: Any
    stop: threading.Event
    audible_starts: list[float] = field(default_factory=list)
    late_ticks: int = 0

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        next_at, previous_silent = time.monotonic(), True
        while not self.stop.is_set():
            source = self.voice.playback  # PCM (this bench predates the Opus stage)
            frame = source.read() if source is not None else SILENCE
            silent = frame == SILENCE
            if previous_silent and not silent:
                self.audible_starts.append(time.monotonic())
            previous_silent = silent
            next_at += FRAME_S
            delay = next_at - time.monotonic()
            if delay < -FRAME_S:
                self.late_ticks += 1
            time.sleep(max(0.0, delay))


async def measure_loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    """How late a 10 ms sleep wakes: the delay every task on the event loop (sends, events) sees."""
    while not stop.is_set():
        start = time.monotonic()
        await asyncio.sleep(0.01)
        samples.append((time.monotonic() - start - 0.01) * 1000)


# ----- one run ------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    guilds: int
    speakers: int
    seconds: float
    input_ms: list[float]
    output_ms: list[float]
    feed_to_read_ms: list[float]
    loop_lag_ms: list[float]
    cpu_percent: float
    underruns: int
    dropped: int
    rss_start_mb: float
    rss_end_mb: float
    turns_stored: int
    replies_heard: int


def rss_mb() -> float:
    """Resident memory now, from /proc (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def input_latencies(spurt_ends: list[float], handed: list[float]) -> list[float]:
    """For each spurt end, the last voiced hand-over before the next spurt could start (ms)."""
    out = []
    for end in spurt_ends:
        lo, hi = bisect.bisect_left(handed, end), bisect.bisect_left(handed, end + 0.7)
        if hi > lo:
            out.append((handed[hi - 1] - end) * 1000)
    return out


def output_latencies(first_chunks: list[float], audible: list[float]) -> list[float]:
    """Each reply's first chunk → the first audible frame read after it (ms)."""
    out = []
    for chunk_at in first_chunks:
        i = bisect.bisect_left(audible, chunk_at)
        if i < len(audible):
            out.append((audible[i] - chunk_at) * 1000)
    return out


async def run_guilds(n: int, seconds: float, speakers: int, settings: Any, db_dir: Path, *,
                     guild_ids: list[int] | None = None, db_path: Path | None = None,
                     before_talking: Callable[[], Awaitable[None]] | None = None) -> RunResult:
    """Start `n` conversations, talk for `seconds`, stop them all, and collect the figures.

    For `bench.processes` (one worker per bot process): `guild_ids` (the worker's shard's guilds),
    `db_path` (one SQLite file all workers share) and `before_talking` (waits until every worker is ready).
    """
    rss_start = rss_mb()
    guild_ids = guild_ids or [1000 + g for g in range(n)]
    db = await Database.open(db_path or db_dir / f"tutor-{n}.sqlite3")
    repository = Repository(db)
    connector = FakeVoiceConnector(real_player=False)  # the bench's own Player reads
    conversations = Conversations(settings=settings, repository=repository, connect=connector,
                                  live_factory=InstrumentedLiveSession)
    packets = [speech_packets(TALK_S, seed) for seed in range(speakers)]
    stop = threading.Event()
    guilds = []
    for g in range(n):
        kids = [MockMember(display_name=f"Kid{g}-{k}") for k in range(speakers)]
        channel = MockVoiceChannel(name=f"Homework {g}")
        channel.members = list(kids)
        conversation = await conversations.start(StartRequest(
            guild_id=guild_ids[g], voice_channel=channel, starter_id=kids[0].id, starter_name=kids[0].display_name,
            level=BUILTIN_LEVELS["space"], age=8, greet=False))  # replies counted: no greeting
        voice = connector.last
        stagger = (TALK_S + PAUSE_S) / speakers
        talkers = [Speaker(voice, kid, packets[k], offset_s=k * stagger + g * 0.013, stop=stop)
                   for k, kid in enumerate(kids)]
        guilds.append((conversation, voice, talkers, Player(voice, stop)))
    if before_talking is not None:
        await before_talking()
    lag: list[float] = []
    lag_stop = asyncio.Event()
    lag_task = asyncio.create_task(measure_loop_lag(lag, lag_stop))
    cpu_start, wall_start = time.process_time(), time.monotonic()
    for _, _, talkers, player in guilds:
        player.start()
        for talker in talkers:
            talker.start()
    await asyncio.sleep(seconds)
    stop.set()
    cpu = (time.process_time() - cpu_start) / (time.monotonic() - wall_start) * 100
    lag_stop.set()
    await lag_task
    for _, _, talkers, player in guilds:
        for thread in (*talkers, player):
            thread.join()
    await asyncio.sleep(1.0)  # let replies to the last spurts arrive before stopping
    result = RunResult(n, n * speakers, seconds, [], [], [], lag, cpu, 0, 0, rss_start, 0.0, 0, 0)
    for conversation, voice, talkers, player in guilds:
        live = conversation.live
        status = conversation.status()
        ends = sorted(t for talker in talkers for t in talker.spurt_ends if t < wall_start + seconds - 1.0)
        result.input_ms += input_latencies(ends, live.voiced_handed_at)
        result.output_ms += output_latencies(live.first_chunk_at, player.audible_starts)
        result.feed_to_read_ms += [s * 1000 for s in voice.playback.first_frame_latencies] if voice.source else []
        result.underruns += status.underruns
        written = sum(t.written for t in talkers)
        result.dropped += written - sum(voice.sink.frames_in.values()) + voice.sink.errors
        result.dropped += round(live.stats.audio_ms_dropped / 20)
        result.replies_heard += len(live.first_chunk_at)
    await conversations.stop_all("bench finished")
    for conversation, *_ in guilds:
        result.turns_stored += len(await repository.get_turns(conversation.guild_id, conversation.session_id))
    await db.close()
    result.rss_end_mb = rss_mb()
    return result


# ----- report -------------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def trio(values: list[float]) -> str:
    return f"{pct(values, 50):5.1f} /{pct(values, 95):5.1f} /{pct(values, 99):5.1f}"


def print_table(results: list[RunResult], server_cpu_percent: float) -> None:
    talking_share = TALK_S / (TALK_S + PAUSE_S)
    print(f"{'guilds':>6} {'kids':>5} {'in ms p50/p95/p99':>20} {'out ms p50/p95/p99':>20} "
          f"{'loop lag p99/max':>17} {'CPU %':>6} {'%/kid':>6} {'%/talking':>9} {'underr':>6} {'drop':>5} "
          f"{'RSS MB start→end':>17} {'turns':>6}")
    for r in results:
        per_kid = r.cpu_percent / r.speakers
        per_talking = r.cpu_percent / (r.speakers * talking_share)
        print(f"{r.guilds:>6} {r.speakers:>5} {trio(r.input_ms):>20} {trio(r.output_ms):>20} "
              f"{pct(r.loop_lag_ms, 99):7.1f} /{max(r.loop_lag_ms, default=0):6.1f} {r.cpu_percent:>6.1f} "
              f"{per_kid:>6.2f} {per_talking:>9.2f} {r.underruns:>6} {r.dropped:>5} "
              f"{r.rss_start_mb:>7.1f} →{r.rss_end_mb:>7.1f} {r.turns_stored:>6}")
    counts = ", ".join(f"{len(r.input_ms)}/{len(r.output_ms)}" for r in results)
    print(f"(in: last packet into the sink → its audio handed to LiveSession; out: first reply chunk received →"
          f" first audible frame read; in/out samples per row: {counts};"
          f" fake server CPU {server_cpu_percent:.1f} % of a core in its own process, not counted above)")
    top = max(results, key=lambda r: r.guilds)
    worst_cpu = max(r.cpu_percent / (r.speakers * talking_share) for r in results)
    checks = [
        (f"≤ {GOAL_LATENCY_MS:.0f} ms p95 in at N={top.guilds}", pct(top.input_ms, 95) <= GOAL_LATENCY_MS,
         f"{pct(top.input_ms, 95):.1f}"),
        (f"≤ {GOAL_LATENCY_MS:.0f} ms p95 out at N={top.guilds}", pct(top.output_ms, 95) <= GOAL_LATENCY_MS,
         f"{pct(top.output_ms, 95):.1f}"),
        ("no underrun while reply audio is buffered", all(r.underruns == 0 for r in results),
         str(sum(r.underruns for r in results))),
        (f"≤ {GOAL_CORE_PERCENT:.0f} % of a core per talking kid", worst_cpu <= GOAL_CORE_PERCENT, f"{worst_cpu:.2f}"),
    ]
    print("goals: " + "; ".join(f"{name} {'✓' if ok else '✗'} ({value})" for name, ok, value in checks))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guilds", default="1,5,20", help="comma-separated guild counts (default 1,5,20)")
    parser.add_argument("--seconds", type=float, default=20.0, help="talking time per guild count (default 20)")
    parser.add_argument("--speakers", type=int, default=2, help="kids per guild (default 2)")
    parser.add_argument("--think-ms", type=float, default=200.0, help="fake model's think time (default 200)")
    parser.add_argument("--reply-ms", type=float, default=1500.0, help="reply audio length (default 1500)")
    parser.add_argument("--processes", type=int, default=None, metavar="N",
                        help="the largest --guilds count over N bot processes, beside 1 process (bench.processes)")
    return parser.parse_known_args()[0]


async def run_all(args: argparse.Namespace, server: Any) -> list[RunResult]:
    settings = settings_for(server)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        return [await run_guilds(int(n), args.seconds, args.speakers, settings, Path(tmp))
                for n in args.guilds.split(",")]


def main() -> None:
    args = parse_args()
    if args.processes:
        from bench.processes import main as multiprocess_main

        multiprocess_main()
        return
    discord.opus._load_default()
    if not discord.opus.is_loaded():
        raise SystemExit("libopus is not loadable: install libopus0 (apt-get install libopus0)")
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=serve_fake_live, args=(theirs, args.think_ms / 1000, args.reply_ms), daemon=True)
    child.start()
    server = SimpleNamespace(**ours.recv())
    started = time.monotonic()
    try:
        results = asyncio.run(run_all(args, server))
    finally:
        ours.send("stop")
        report = ours.recv() if ours.poll(10) else {"cpu_s": float("nan"), "replies": -1}
        child.join(5)
    elapsed = time.monotonic() - started
    print(f"End to end: {args.speakers} kids per guild ({TALK_S:g} s talk / {PAUSE_S:g} s pause each, Opus 64 kbit/s),"
          f" fake Live think {args.think_ms:.0f} ms, {args.reply_ms:.0f} ms replies, {args.seconds:g} s per row;"
          f" {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}\n")
    print_table(results, report["cpu_s"] / elapsed * 100)
    print(f"fake server sent {report['replies']} replies in {elapsed:.0f} s")


if __name__ == "__main__":
    main()

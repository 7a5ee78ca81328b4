"""End to end on the production path: N guilds' real conversations over real DAVE, UDP and discord.py's player.

Run: `python -m bench.e2e` (or `scripts/bench e2e`), `--guilds 1,5,20 --seconds 20 --idle-seconds 6`;
`--processes 2` runs the same guilds spread over 2 bot processes beside 1 process (`bench.processes`);
`--baseline handover|hold|catchup|day1` runs every row twice in turn, as the bot was before a change (`BASELINES`)
and as it is, and prints the ratios (`--rounds 2` alternates them twice and takes medians); `--no-profile`
leaves py-spy out (it costs 10–85 % of a core here, printed per row; `--profile-rate` lowers it), and the
loop's iterations a second, which other load cannot change, still compare.

Each guild is a real `Conversations.start()` whose voice client is the `DaveVoiceRecvClient` of a DAVE harness
call (`tests/dave_harness.py`: discord.py's real connect path against a local voice server, 2 kids in one real
davey MLS group). Both directions are the production path:

* in — each kid is a thread that, at 20 ms pace, DAVE-encrypts its Opus frame with its own davey session,
  wraps it in RTP with transport encryption and sends it over loopback UDP; the bot's socket is read by
  voice-recv's reader, decrypted (transport, then DAVE in the shim), jitter-buffered, decoded and routed to
  the sink → downsampler → mixer → pump → `LiveSession` → the fake Live server (its own process);
* out — reply audio → `PlaybackSource` → discord.py's own `AudioPlayer` thread → Opus encode (`TUTOR_VOICE`)
  → DAVE encrypt → transport encrypt → UDP to the voice server's socket, where an "ear" thread stamps every
  packet as it arrives (the kids' clients' side; what they heard is DAVE-decrypted after the run).

Kids talk in turns, 1.5 s of speech each, and the guild then stays quiet long enough for the turn to end
and be answered (the conversation's silence tail — 1200 ms at age 8, `bot.turn_taking` — plus the fake's
200 ms think time and its 1.5 s reply, plus 0.4 s), so every spurt is a turn with a reply played back.
Phases per row: voice connected with no conversation (baseline), the conversations started and idle, then
talking. CPU per stage comes from py-spy samples of this process (`bench/profile.py`); the kids' and the voice
servers' work is attributed to the harness and left out. A voice reconnect that identifies afresh is answered
as the kids' clients would: they welcome the bot into DAVE again (`rewelcome_after_reconnects`).

Latency (documented because the goals are checked on it):
* in: a kid's last packet of a talk spurt leaving its socket → the message carrying that audio written to
  the Live socket (UDP, voice-recv, decode, downsample, mixer jitter hold, pump tick, send policy, SDK);
* out: a reply's first chunk parsed by `LiveSession` → the first packet of that reply arriving at the kid's
  socket (playback queue, player wake-up, upsample, encode, DAVE, UDP);
* loop lag: how late a 50 ms sleep on the event loop wakes; underruns: `PlaybackSource` ran dry mid-turn.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import logging
import multiprocessing
import os
import resource
import select
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import discord.opus

import bot.voice_link
from bench import profile, wire
from bot.audio import pump_clock
from bot.audio.playback import PlaybackSource
from bot.audio.pump_clock import STALL_S, PumpClock
from bot.audio.sink import TutorSink
from bot.levels import BUILTIN_LEVELS
from bot.live import events as ev
from bot.live.session import LiveSession
from bot.storage import Database, Repository
from bot.turn_taking import turn_pause_ms
from bot.tutor import Conversations, StartRequest
from tests.dave_harness import VoiceServerHarness
from tests.fake_live import FakeLiveServer, make_client_settings

log = logging.getLogger("bench.e2e")

FRAME_S = 0.02
TALK_S = 1.5
AGE = 8
REPLY_ROOM_S = turn_pause_ms(None, AGE) / 1000 + 0.2 + 1.5 + 0.4  # tail + think + reply + margin
RTP_VOICE = 0x78
LAG_PROBE_S = 0.05
IN_WINDOW_S = 2.5  # a spurt's audio handed this long after its last packet still counts (the next comes > 3 s later)
REPLY_GAP_S = 0.1  # a packet after this long a silence from the bot starts a new reply
GOAL_LATENCY_MS = 40.0
GOAL_TALKING_KID_PERCENT = 2.0
GOAL_IDLE_PERCENT = 0.1


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
    """The real LiveSession; stamps voiced input handed to it (time, bytes so far) and each reply's first chunk."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.voiced_handed: list[tuple[float, int]] = []
        self.audio_handed = 0
        self.first_chunk_at: list[float] = []

    def send_audio(self, pcm16k: bytes, *, urgent: bool = False) -> None:
        self.audio_handed += len(pcm16k)
        if pcm16k.strip(b"\0"):
            self.voiced_handed.append((time.monotonic(), self.audio_handed))
        super().send_audio(pcm16k, urgent=urgent)

    async def events(self) -> AsyncIterator[ev.LiveEvent]:
        in_turn = False
        async for event in super().events():
            if isinstance(event, ev.AudioChunk) and not in_turn:
                in_turn = True
                self.first_chunk_at.append(event.received_at)
            elif isinstance(event, ev.TurnComplete | ev.Interrupted):
                in_turn = False
            yield event


@dataclass(eq=False)  # threads must stay hashable
class Kid(threading.Thread):
    """A kid's client: talk spurts of its own voice, DAVE + transport encrypted, over UDP, 20 ms apart."""

    harness: VoiceServerHarness
    party: Any  # tests.dave_harness.RemoteUser
    offset_s: float
    pause_s: float  # after each spurt, while the other kids talk and the tutor answers
    stop: threading.Event
    spurt_ends: list[float] = field(default_factory=list)
    sent: int = 0

    def __post_init__(self) -> None:
        super().__init__(daemon=True, name=f"kid-{self.party.user_id}")

    def run(self) -> None:
        next_at = time.monotonic() + self.offset_s
        while not self.stop.is_set():
            time.sleep(max(0.0, next_at - time.monotonic()))
            last = 0.0
            for _ in range(round(TALK_S / FRAME_S)):
                datagram = self.party.speak(1)[0]
                last = time.monotonic()
                self.harness.server.send_rtp(datagram)
                self.sent += 1
                next_at += FRAME_S
                time.sleep(max(0.0, next_at - time.monotonic()))
            self.spurt_ends.append(last)
            next_at += self.pause_s


class Ear(threading.Thread):
    """The kids' side of the voice server's UDP socket: stamps every packet the bot sends as it arrives.

    Takes the socket over from the server's event-loop reader (after the bot's IP discovery), so a busy
    loop does not delay the stamps; the server still handles each datagram (packets are kept in
    `server.rtp_from_bot` for `harness.bot_said()`, and the IP discovery of a reconnect is answered).
    """

    def __init__(self, harness: VoiceServerHarness) -> None:
        super().__init__(daemon=True, name=f"ear-{id(harness):x}")
        self.server = harness.server
        self.arrivals: list[float] = []
        self._done = threading.Event()
        asyncio.get_running_loop().remove_reader(self.server._udp.fileno())

    def run(self) -> None:
        udp = self.server._udp
        while not self._done.is_set():
            ready, _, _ = select.select([udp], [], [], 0.05)
            while ready:
                try:
                    data, address = udp.recvfrom(4096)
                except (BlockingIOError, OSError):
                    break
                if len(data) > 12 and data[1] == RTP_VOICE:
                    self.arrivals.append(time.monotonic())
                self.server.handle_datagram(data, address)

    def close(self) -> None:
        self._done.set()
        self.join(1.0)


async def rewelcome_after_reconnects(harnesses: list[VoiceServerHarness], stop: asyncio.Event) -> int:
    """Discord's side of a voice reconnect that identifies afresh (a resume keeps the DAVE session): the kids
    regroup and welcome the bot again (`VoiceServerHarness.welcome_back`), as their clients would. Without
    this a loaded run whose voice websockets missed heartbeats lost every kid packet after the reconnect.
    Returns how many times it happened."""
    seen = [(len(h.server.json_ops(0)), len(h.server.binary_ops(26))) for h in harnesses]
    welcomes: list[asyncio.Task[None]] = []
    while not stop.is_set():
        for i, h in enumerate(harnesses):
            identifies, key_packages = len(h.server.json_ops(0)), len(h.server.binary_ops(26))
            if identifies > seen[i][0]:
                log.warning("bench.voice_reidentified", extra={"harness": i})
                welcomes.append(asyncio.create_task(h.welcome_back(key_packages_before=seen[i][1])))
            seen[i] = (identifies, key_packages)
        await asyncio.sleep(0.1)
    for task in welcomes:
        with contextlib.suppress(Exception):
            await task
    return len(welcomes)


class LoopIterations:
    """Counts the event loop's iterations (each one an epoll wake-up and a pass over what is ready): a figure
    other load on the machine does not change, for before/after ratios of work handed to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.count = 0
        self._loop = loop
        real = loop._run_once  # type: ignore[attr-defined]

        def counted() -> None:
            self.count += 1
            real()

        loop._run_once = counted  # type: ignore[attr-defined]

    def close(self) -> None:
        del self._loop._run_once  # type: ignore[attr-defined]


async def measure_loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    """How late a sleep wakes: the delay every task on the event loop (sends, events) sees.

    50 ms apart, not 10: at 10 ms this probe was a third of the loop's wake-ups at N = 1 (cProfile), CPU the
    table then charged to the bot."""
    while not stop.is_set():
        start = time.monotonic()
        await asyncio.sleep(LAG_PROBE_S)
        samples.append((time.monotonic() - start - LAG_PROBE_S) * 1000)


# ----- one run ------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    guilds: int
    speakers: int
    seconds: float
    input_ms: list[float]
    output_ms: list[float]
    loop_lag_ms: list[float]
    cpu_percent: float  # this process while talking, harness included (py-spy separates it: `stages`)
    underruns: int
    dropped: int
    rss_start_mb: float
    rss_end_mb: float
    turns_stored: int
    replies_heard: int
    stages: dict[str, float] = field(default_factory=dict)  # % of a core per stage while talking
    idle_stages: dict[str, float] = field(default_factory=dict)  # the same with every conversation idle
    baseline_stages: dict[str, float] = field(default_factory=dict)  # voice connected, no conversation
    idle_packets_per_s: float = 0.0  # voice packets the bot sent per idle conversation
    talking_share: float = 0.0  # kids talking on average, per kid
    heard_s: float = 0.0  # seconds of the tutor's voice the first kid's client decrypted, decoded and found loud
    label: str = ""  # which variant ran ("" when not comparing)
    profiler_percent: float = 0.0  # py-spy's own CPU while talking (it competes with the bot for the cores)
    reidentified: int = 0  # voice reconnects that identified afresh (the kids welcomed the bot into DAVE again)
    loop_iterations_per_s: float = 0.0  # event loop wake-ups a second while talking (harness and probe included)


def rss_mb() -> float:
    """Resident memory now, from /proc (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bot_total(stages: dict[str, float]) -> float:
    """The bot's share of a core: every stage but the harness."""
    return sum(v for k, v in stages.items() if k != "harness")


def input_latencies(spurt_ends: list[float], live: InstrumentedLiveSession) -> list[float]:
    """Each spurt's last packet sent → the message carrying its audio written to the Live socket (ms)."""
    out = []
    handed_at = [t for t, _ in live.voiced_handed]
    genai_session = live._connection.session if live._connection is not None else None
    for end in spurt_ends:
        lo, hi = bisect.bisect_left(handed_at, end), bisect.bisect_left(handed_at, end + IN_WINDOW_S)
        if hi > lo and genai_session is not None:
            written = wire.written_at(genai_session, live.voiced_handed[hi - 1][1])
            if written is not None:
                out.append((written - end) * 1000)
    return out


def output_latencies(first_chunks: list[float], arrivals: list[float]) -> list[float]:
    """Each reply's first chunk parsed → the first packet of a new burst at the kid's socket after it (ms)."""
    starts = [t for i, t in enumerate(arrivals) if i == 0 or t - arrivals[i - 1] > REPLY_GAP_S]
    out = []
    for chunk_at in first_chunks:
        i = bisect.bisect_left(starts, chunk_at)
        if i < len(starts) and starts[i] - chunk_at < 1.0:
            out.append((starts[i] - chunk_at) * 1000)
    return out


async def profiled(seconds: float, enabled: bool, rate: int = profile.RATE) -> tuple[dict[str, float], float]:
    """% of a core per stage over the next `seconds` (py-spy) and py-spy's own %, or ({}, 0) when off."""
    if not enabled:
        await asyncio.sleep(seconds)
        return {}, 0.0
    profiler = profile.Profiler(seconds, rate)
    await profiler.start()
    stages = await profiler.stop()
    return stages, profiler.own_cpu_percent


async def run_guilds(n: int, seconds: float, speakers: int, settings: Any, db_dir: Path, *,
                     guild_ids: list[int] | None = None, db_path: Path | None = None,
                     before_talking: Callable[[], Awaitable[None]] | None = None,
                     idle_seconds: float = 6.0, use_profiler: bool | None = None,
                     reply_room_s: float = REPLY_ROOM_S, profile_rate: int = profile.RATE) -> RunResult:
    """Connect `n` DAVE calls, measure them without and with idle conversations, then talking, and collect.

    For `bench.processes` (one worker per bot process): `guild_ids` (the worker's shard's guilds),
    `db_path` (one SQLite file all workers share) and `before_talking` (waits until every worker is ready).
    """
    use_profiler = profile.available() if use_profiler is None else use_profiler
    wire.install()
    bot.voice_link.VOICE_DISCONNECT_TIMEOUT_S = 0.5  # no gateway acknowledges the leave here
    rss_start = rss_mb()
    guild_ids = guild_ids or [1000 + g for g in range(n)]
    db = await Database.open(db_path or db_dir / f"tutor-{n}.sqlite3")
    repository = Repository(db)
    harnesses = [await VoiceServerHarness.start(parties=speakers) for _ in range(n)]
    for h in harnesses:  # discord.py's send path uses sendall(); the handshake leaves the socket connected
        await h.wait_until(lambda h=h: h.server.bot_address is not None)
    by_channel = {id(h.channel): h for h in harnesses}

    async def connect(channel: Any) -> Any:
        return by_channel[id(channel)].vc

    ears = [Ear(h) for h in harnesses]
    for ear in ears:
        ear.start()
    rewelcome_stop = asyncio.Event()
    rewelcomer = asyncio.create_task(rewelcome_after_reconnects(harnesses, rewelcome_stop))
    baseline, _ = await profiled(idle_seconds, use_profiler, profile_rate)

    conversations = Conversations(settings=settings, repository=repository, connect=connect,
                                  live_factory=InstrumentedLiveSession)
    guilds = []
    for h, guild_id in zip(harnesses, guild_ids, strict=True):
        conversation = await conversations.start(StartRequest(
            guild_id=guild_id, voice_channel=h.channel, starter_id=h.speaker.user_id, starter_name="Kid",
            level=BUILTIN_LEVELS["space"], age=AGE, greet=False))  # replies counted: no greeting
        guilds.append((conversation, h))
    await asyncio.sleep(1.0)  # every player has read its first frame and paused
    packets_before = sum(len(e.arrivals) for e in ears)
    idle_started = time.monotonic()
    idle, _ = await profiled(idle_seconds, use_profiler, profile_rate)
    idle_packets = (sum(len(e.arrivals) for e in ears) - packets_before) / (time.monotonic() - idle_started) / n

    if before_talking is not None:
        await before_talking()
    stop = threading.Event()
    turn_s = TALK_S + reply_room_s  # one kid's spurt and its reply; the kids take turns
    kids = [Kid(h, party, offset_s=k * turn_s + g * 0.013, pause_s=speakers * turn_s - TALK_S, stop=stop)
            for g, h in enumerate(harnesses) for k, party in enumerate(h.parties)]
    lag: list[float] = []
    lag_stop = asyncio.Event()
    lag_task = asyncio.create_task(measure_loop_lag(lag, lag_stop))
    iterations = LoopIterations(asyncio.get_running_loop())
    cpu_start, wall_start = time.process_time(), time.monotonic()
    for kid in kids:
        kid.start()
    talking, profiler_percent = await profiled(seconds, use_profiler, profile_rate)
    stop.set()
    cpu = (time.process_time() - cpu_start) / (time.monotonic() - wall_start) * 100
    loop_per_s = iterations.count / (time.monotonic() - wall_start)
    iterations.close()
    lag_stop.set()
    await lag_task
    for kid in kids:
        kid.join()
    await asyncio.sleep(2.5)  # let the replies to the last spurts play out

    result = RunResult(n, n * speakers, seconds, [], [], lag, cpu, 0, 0, rss_start, 0.0, 0, 0, talking, idle,
                       baseline, idle_packets, TALK_S / (speakers * turn_s), profiler_percent=profiler_percent,
                       loop_iterations_per_s=loop_per_s)
    for (conversation, h), ear in zip(guilds, ears, strict=True):
        live = conversation.live
        status = conversation.status()
        ends = sorted(t for kid in kids if kid.harness is h for t in kid.spurt_ends if t < wall_start + seconds - 1)
        result.input_ms += input_latencies(ends, live)
        result.output_ms += output_latencies(live.first_chunk_at, ear.arrivals)
        result.underruns += status.underruns
        sent = sum(kid.sent for kid in kids if kid.harness is h)
        result.dropped += (max(0, sent - status.packets_received)  # lost on the way
                           + status.packets_dropped + status.packets_concealed  # unreadable, undecryptable
                           + round(live.stats.audio_ms_dropped / 20))  # input the Live outbox let go
        result.replies_heard += len(live.first_chunk_at)
    rewelcome_stop.set()
    result.reidentified = await rewelcomer
    await conversations.stop_all("bench finished")
    for ear in ears:
        ear.close()
    for (conversation, h) in guilds:
        heard = h.bot_said(h.speaker)
        loud = [pcm for pcm in heard if max(abs(v) for v in memoryview(pcm).cast("h")[::97]) > 2000]
        result.heard_s += len(loud) * FRAME_S
        result.turns_stored += len(await repository.get_turns(conversation.guild_id, conversation.session_id))
    for h in harnesses:
        await h.close()
    await db.close()
    wire.clear()
    result.rss_end_mb = rss_mb()
    return result


# ----- baselines: the bot as it was before a change, run side by side with it ---------------------------


@contextlib.contextmanager
def per_frame_handover() -> Iterator[None]:
    """Before the batched hand-over: every frame the sink gets wakes the loop with its own
    `call_soon_threadsafe`, whether or not the input pump is ticking anyway."""
    def schedule(self: TutorSink, user_id: int, name: str, pcm16k: bytes) -> None:
        with self._pending_lock:
            self._pending.append((user_id, name, pcm16k, time.monotonic()))
        self.wakes += 1
        self._loop.call_soon_threadsafe(self.deliver_pending)

    with mock.patch.object(TutorSink, "_schedule", schedule):
        yield


@contextlib.contextmanager
def tick_only_pump() -> Iterator[None]:
    """Before the pump woke for a late speaker: a hold waited for the pump's next 20 ms tick."""
    def next_wake(self: PumpClock, mixer: Any, now: float) -> tuple[float, bool]:
        self.next_tick += self.period
        if self.next_tick < now - STALL_S:
            self.next_tick = now + self.period
        return self.next_tick, False

    with mock.patch.object(PumpClock, "next_wake", next_wake):
        yield


@contextlib.contextmanager
def standing_queue() -> Iterator[None]:
    """Before the pump sent every whole queued frame at once: it caught up only past 40 ms, so up to two frames
    could stand in the mixer's queue for a whole spurt."""
    with mock.patch.object(pump_clock, "CATCH_UP_MS", 40 + 1e-9):  # "more than 40 ms", as the old `queued_ms > 40`
        yield


@contextlib.contextmanager
def day_one() -> Iterator[None]:
    """The bot as issue 15's first day left it: all of the above."""
    with per_frame_handover(), tick_only_pump(), standing_queue():
        yield


BASELINES: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "handover": per_frame_handover,
    "hold": tick_only_pump,
    "catchup": standing_queue,
    "day1": day_one,
}


# ----- report -------------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def trio(values: list[float]) -> str:
    return f"{pct(values, 50):5.1f} /{pct(values, 95):5.1f} /{pct(values, 99):5.1f}"


STAGE_ORDER = ["transport decrypt", "DAVE decrypt", "voice-recv (reader, jitter buffer, router)", "Opus decode",
               "downsample 48k→16k", "sink hand-over", "mix", "input pump", "Live send", "Live receive",
               "playback queue", "upsample 24k→48k", "Opus encode", "DAVE encrypt", "transport encrypt", "UDP send",
               "discord.py player", "storage", profile.OTHER]


def per_talking_kid(r: RunResult) -> float:
    return bot_total(r.stages) / (r.speakers * r.talking_share) if r.stages else float("nan")


def print_ratios(results: list[RunResult]) -> None:
    """Per guild count: the current bot ÷ the baseline, medians over rounds."""
    print("now ÷ before, same run (median over rounds):")
    for n in sorted({r.guilds for r in results}):
        before = [r for r in results if r.guilds == n and r.label != "now"]
        now = [r for r in results if r.guilds == n and r.label == "now"]

        def ratio(pick: Callable[[RunResult], float], before: list[RunResult] = before,
                  now: list[RunResult] = now) -> str:
            a, b = statistics.median(pick(r) for r in before), statistics.median(pick(r) for r in now)
            return f"{b / a:.2f} ({a:.2f} → {b:.2f})" if a else "n/a"
        print(f"  N={n}: % of a core per talking kid ×{ratio(per_talking_kid)};"
              f" process CPU (harness included) ×{ratio(lambda r: r.cpu_percent)};"
              f" loop iterations/s ×{ratio(lambda r: r.loop_iterations_per_s)};"
              f" in p95 ×{ratio(lambda r: pct(r.input_ms, 95))}; out p95 ×{ratio(lambda r: pct(r.output_ms, 95))};"
              f" loop lag p99 ×{ratio(lambda r: pct(r.loop_lag_ms, 99))}")
    print()


def print_tables(results: list[RunResult], server_cpu_percent: float) -> None:
    print(f"{'variant':>8} {'guilds':>6} {'kids':>5} {'in ms p50/p95/p99':>20} {'out ms p50/p95/p99':>20} "
          f"{'loop lag p99/max':>17} {'loop/s':>6} {'bot %':>6} {'%/talking kid':>13} {'idle %/conv':>11} "
          f"{'idle pkt/s':>10} {'underr':>6} {'drop':>5} {'replies':>7} {'kid heard s':>11} {'RSS MB':>7}")
    for r in results:
        talking_kids = r.speakers * r.talking_share
        bot = bot_total(r.stages) if r.stages else float("nan")
        idle = (bot_total(r.idle_stages) - bot_total(r.baseline_stages)) / r.guilds if r.idle_stages else float("nan")
        print(f"{r.label:>8} {r.guilds:>6} {r.speakers:>5} {trio(r.input_ms):>20} {trio(r.output_ms):>20} "
              f"{pct(r.loop_lag_ms, 99):7.1f} /{max(r.loop_lag_ms, default=0):6.1f} {r.loop_iterations_per_s:>6.0f}"
              f" {bot:>6.1f} "
              f"{bot / talking_kids:>13.2f} {idle:>11.3f} {r.idle_packets_per_s:>10.2f} {r.underruns:>6} "
              f"{r.dropped:>5} {r.replies_heard:>7} {r.heard_s:>11.1f} {r.rss_end_mb:>7.0f}")
    counts = ", ".join(f"{len(r.input_ms)}/{len(r.output_ms)}" for r in results)
    print(f"(in: kid's last packet sent → its audio written to the Live socket; out: reply's first chunk parsed →"
          f" first packet at the kid's socket; samples per row: {counts};"
          f" fake Live server {server_cpu_percent:.1f} % of a core in its own process, not counted; py-spy itself"
          f" {', '.join(f'{r.profiler_percent:.0f}' for r in results)} % of a core while talking; voice reconnects"
          f" with a fresh DAVE welcome: {', '.join(str(r.reidentified) for r in results)})\n")
    if not any(r.stages for r in results):
        print("(no per-stage table: --no-profile, or py-spy is not installed — `pip install py-spy`)")
        return
    header = "stage, % of a core" + "".join(
        f"  {' '.join(filter(None, ['N=' + str(r.guilds), r.label, '/talking kid'])):>17} {'idle/conv':>9}"
        for r in results)
    print(header)
    stages = STAGE_ORDER + sorted({k for r in results for k in r.stages} - set(STAGE_ORDER) - {"harness"})
    for stage in [*stages, "total"]:
        cells = []
        for r in results:
            talking_kids = r.speakers * r.talking_share
            pick = bot_total if stage == "total" else (lambda d, s=stage: d.get(s, 0.0))
            talk = pick(r.stages) / talking_kids
            idle = (pick(r.idle_stages) - pick(r.baseline_stages)) / r.guilds
            cells.append(f"  {talk:>17.3f} {idle:>9.3f}")
        print(f"{stage:<18}" + "".join(cells) if len(stage) <= 18 else f"{stage}\n{'':<18}" + "".join(cells))
    print("(talking: the stage's CPU while kids talk ÷ kids talking on average; idle: with idle conversations minus"
          " without any, ÷ conversations; py-spy samples at --profile-rate — a sparse split at low rates —, harness"
          " (kids' clients, voice servers) left out)")
    top = max(results, key=lambda r: r.guilds)
    worst_talking = max(bot_total(r.stages) / (r.speakers * r.talking_share) for r in results)
    worst_idle = max((bot_total(r.idle_stages) - bot_total(r.baseline_stages)) / r.guilds for r in results)
    checks = [
        (f"≤ {GOAL_TALKING_KID_PERCENT:g} % of a core per talking kid", worst_talking <= GOAL_TALKING_KID_PERCENT,
         f"{worst_talking:.2f}"),
        (f"idle conversation ≤ {GOAL_IDLE_PERCENT:g} %", worst_idle <= GOAL_IDLE_PERCENT, f"{worst_idle:.3f}"),
        ("idle: 0 packets", all(r.idle_packets_per_s == 0 for r in results),
         f"{max(r.idle_packets_per_s for r in results):.2f}/s"),
        (f"≤ {GOAL_LATENCY_MS:.0f} ms p95 in at N={top.guilds}", pct(top.input_ms, 95) <= GOAL_LATENCY_MS,
         f"{pct(top.input_ms, 95):.1f}"),
        (f"≤ {GOAL_LATENCY_MS:.0f} ms p95 out at N={top.guilds}", pct(top.output_ms, 95) <= GOAL_LATENCY_MS,
         f"{pct(top.output_ms, 95):.1f}"),
        ("0 underruns", all(r.underruns == 0 for r in results), str(sum(r.underruns for r in results))),
    ]
    print("goals: " + "; ".join(f"{name} {'✓' if ok else '✗'} ({value})" for name, ok, value in checks))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guilds", default="1,5,20", help="comma-separated guild counts (default 1,5,20)")
    parser.add_argument("--seconds", type=float, default=20.0, help="talking time per guild count (default 20)")
    parser.add_argument("--idle-seconds", type=float, default=6.0, help="each idle phase (default 6)")
    parser.add_argument("--speakers", type=int, default=2, help="kids per guild (default 2)")
    parser.add_argument("--think-ms", type=float, default=200.0, help="fake model's think time (default 200)")
    parser.add_argument("--reply-ms", type=float, default=1500.0, help="reply audio length (default 1500)")
    parser.add_argument("--no-profile", action="store_true", help="skip py-spy (no per-stage table)")
    parser.add_argument("--profile-rate", type=int, default=profile.RATE,
                        help=f"py-spy samples per second (default {profile.RATE}; it costs CPU: lower it for large N)")
    parser.add_argument("--never-pause", action="store_true",
                        help="the player never rests between replies (the bot before idle pausing), to compare")
    parser.add_argument("--baseline", choices=sorted(BASELINES),
                        help="run each row also as the bot was before that change, in turns, and print ratios")
    parser.add_argument("--rounds", type=int, default=1, help="with --baseline: alternate this often (default 1)")
    parser.add_argument("--processes", type=int, default=None, metavar="N",
                        help="the largest --guilds count over N bot processes, beside 1 process (bench.processes)")
    return parser.parse_known_args()[0]


async def run_all(args: argparse.Namespace, server: Any) -> list[RunResult]:
    settings = settings_for(server)
    variants: list[tuple[str, Callable[[], contextlib.AbstractContextManager[None]]]] = [("", contextlib.nullcontext)]
    if args.baseline:
        variants = [(args.baseline, BASELINES[args.baseline]), ("now", contextlib.nullcontext)] * args.rounds
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        for n in args.guilds.split(","):
            for label, variant in variants:
                with variant():
                    result = await run_guilds(int(n), args.seconds, args.speakers, settings, Path(tmp),
                                              idle_seconds=args.idle_seconds, profile_rate=args.profile_rate,
                                              use_profiler=not args.no_profile and None)
                result.label = label
                results.append(result)
    return results


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")  # faults show up
    if args.processes:
        from bench.processes import main as multiprocess_main

        multiprocess_main()
        return
    discord.opus._load_default()
    if not discord.opus.is_loaded():
        raise SystemExit("libopus is not loadable: install libopus0 (apt-get install libopus0)")
    if args.never_pause:
        real_bind = PlaybackSource.pause_when_idle
        PlaybackSource.pause_when_idle = lambda self, player: real_bind(self, None)  # type: ignore[method-assign]
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=serve_fake_live, args=(theirs, args.think_ms / 1000, args.reply_ms), daemon=True)
    child.start()
    server = SimpleNamespace(**ours.recv())
    started, load_before = time.monotonic(), os.getloadavg()[0]
    try:
        results = asyncio.run(run_all(args, server))
    finally:
        ours.send("stop")
        report = ours.recv() if ours.poll(10) else {"cpu_s": float("nan"), "replies": -1}
        child.join(5)
    elapsed = time.monotonic() - started
    print(f"End to end on the production path: {args.speakers} kids per guild taking turns ({TALK_S:g} s talk,"
          f" then {REPLY_ROOM_S:g} s for the reply) over real DAVE + UDP, discord.py's player, fake Live think"
          f" {args.think_ms:.0f} ms, {args.reply_ms:.0f} ms replies, {args.seconds:g} s talking per row;"
          f" {os.cpu_count()} cores, load {load_before:.2f} before / {os.getloadavg()[0]:.2f} after\n")
    if args.baseline:
        print_ratios(results)
    print_tables(results, report["cpu_s"] / elapsed * 100)
    print(f"fake server sent {report['replies']} replies in {elapsed:.0f} s")


if __name__ == "__main__":
    main()

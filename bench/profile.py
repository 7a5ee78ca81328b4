"""Where the bot's CPU goes, per stage: each thread's CPU from the kernel, split by py-spy samples of its stacks.

`Profiler(seconds).start()` reads every thread's CPU time (`/proc/self/task/*/schedstat`) and runs
`py-spy record --nonblocking` on this process (no pausing, so latency is not disturbed; `pip install
py-spy`, run as a user allowed to ptrace); `stop()` reads the CPU times again. A thread's CPU over the
window is exact; py-spy's samples say how to split it among stages. A sample whose innermost line is a
blocking call (`sleep(`, `select(`, `.wait(`, `recv`) is a thread waiting, which py-spy sometimes catches
as running, and is dropped. C code counts where it is called from (a thread inside libopus or soxr is
sampled at its Python call site). Each sample goes to the first stage whose rule matches its stack, leaf
first; the kids' threads and the fake voice servers are the harness, kept out of the bot's figures.

py-spy is not free: it reads every thread's stack `rate` times a second, and at N = 20 (150 threads) at
200 Hz it took most of a core of this 2-core machine away from the bot, stalling the loop for a second at a
time. Its own CPU is reported (`Profiler.own_cpu_percent`), so a run can say how much it was disturbed;
lower `rate` for large N.
"""

from __future__ import annotations

import asyncio
import linecache
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path

RATE = 200  # samples per second per thread

# (stage, rule) in the order a stack is tested, leaf first; a rule takes (function, file, whole stack text)
STAGE_RULES: list[tuple[str, object]] = [
    ("transport decrypt", lambda f, p, s: "decrypt_rtp" in f or (p.endswith("reader.py") and "decrypt" in f)),
    ("DAVE decrypt", lambda f, p, s: ("bot/audio/dave" in p) and f == "_dave_decrypt"),
    ("Opus decode", lambda f, p, s: f == "decode" and p.endswith("opus.py")),
    ("downsample 48k→16k", lambda f, p, s: p.endswith("convert.py") and "sink.py" in s),
    ("upsample 24k→48k", lambda f, p, s: p.endswith("convert.py")),
    ("mix", lambda f, p, s: p.endswith("mixer.py")),
    ("Opus encode", lambda f, p, s: f == "encode" and p.endswith("opus.py")),
    ("transport encrypt", lambda f, p, s: f.startswith("_encrypt_")),
    ("DAVE encrypt", lambda f, p, s: f == "_get_voice_packet"),
    ("UDP send", lambda f, p, s: f == "send_packet"),
    ("Live send", lambda f, p, s: f in ("send_outgoing", "send_realtime_input", "send_client_content")),
    ("Live receive", lambda f, p, s: "google/genai" in p or "/bot/live/" in p or "websockets" in p
        or p.endswith("sslproto.py") or f in ("_on_live_event", "_consume_live_events")),
    ("playback queue", lambda f, p, s: p.endswith("playback.py") or p.endswith("voice_encoder.py")),
    ("voice-recv (reader, jitter buffer, router)", lambda f, p, s: "voice_recv" in p or "bot/audio/dave" in p),
    ("sink hand-over", lambda f, p, s: p.endswith("sink.py")),
    ("discord.py player", lambda f, p, s: p.endswith("discord/player.py") or p.endswith("voice_client.py")),
    ("storage", lambda f, p, s: "aiosqlite" in p or "sqlite3" in p or "/bot/storage/" in p or p.endswith("turns.py")),
    ("input pump", lambda f, p, s: p.endswith("input_pump.py") and f in ("run", "_send")),
]
HARNESS_MARKS = ("dave_harness.py", "fake_voice_server.py", "/bench/")
HARNESS_THREADS = ("kid-", "ear-")
SEND_CALLS = ("send_outgoing", "send_realtime_input", "send_client_content")
OTHER = "event loop and threads, other"
BLOCKING = ("sleep(", "select(", ".wait(", ".recv(", ".recvfrom(", ".get(", ".poll(")
TICKS = os.sysconf("SC_CLK_TCK")


def _executable() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def available() -> bool:
    """py-spy is installed beside this interpreter or on PATH."""
    return _executable() is not None


def _frames(stack: str) -> list[tuple[str, str]]:
    """(function, file) per frame, root first, from py-spy's `Class.func (file:line)` entries (bare names)."""
    out = []
    for entry in stack.split(";"):
        func, _, rest = entry.partition(" (")
        out.append((func.rsplit(".", 1)[-1], rest.rsplit(":", 1)[0]))
    return out


@cache
def _source_line(path: str, line: int) -> str:
    """The text of `path:line`, py-spy's short path resolved against sys.path ("" when not found)."""
    for root in ("", *sys.path):
        candidate = Path(root) / path
        if candidate.is_file():
            return linecache.getline(str(candidate), line)
    return ""


def is_waiting(stack: str) -> bool:
    """The innermost frame is at a blocking call (or inside threading's waits): the thread is not on a CPU."""
    leaf = stack.rsplit(";", 1)[-1]
    func, _, rest = leaf.partition(" (")
    if func.rsplit(".", 1)[-1] in ("wait", "select", "_wait_for_tstate_lock", "get", "sleep"):
        return True
    path, _, line = rest.rstrip(")").rpartition(":")
    return line.isdigit() and any(call in _source_line(path, int(line)) for call in BLOCKING)


def classify(thread_name: str, stack: str) -> str:
    """The stage one sample belongs to ("harness" for what stands in for Discord and the kids)."""
    if thread_name.startswith(HARNESS_THREADS) or any(mark in stack for mark in HARNESS_MARKS):
        return "harness"
    if any(f"{name} (" in stack or f".{name} (" in stack for name in SEND_CALLS):
        return "Live send"  # its TLS and websocket writes too, which the receive rule would otherwise take
    for func, path in reversed(_frames(stack)):
        for stage, rule in STAGE_RULES:
            if rule(func, path, stack):  # type: ignore[operator]
                return stage
    return OTHER


def thread_cpu() -> dict[int, float]:
    """CPU seconds of every thread of this process, by OS thread id.

    From `schedstat` (time on a CPU, in ns), not `stat`'s utime + stime: those count 10 ms clock ticks, and one
    tick over a 6 s idle window is 0.17 % of a core — more than the whole idle goal."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):  # ended meanwhile, or no schedstat: the coarse ticks
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def parse(raw: str, cpu_seconds: dict[int, float], seconds: float) -> dict[str, float]:
    """py-spy raw output + each thread's CPU seconds → % of one core per stage."""
    per_thread: defaultdict[int, Counter[str]] = defaultdict(Counter)
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith("thread (") or not count.isdigit():
            continue
        header, _, frames = stack.partition(";")
        tid = int(header[len("thread ("):].split(")", 1)[0])
        if not is_waiting(frames):
            per_thread[tid][classify(header.split("): ", 1)[-1], frames)] += int(count)
    stages: Counter[str] = Counter()
    for tid, cpu in cpu_seconds.items():
        samples = per_thread.get(tid)
        if not samples:
            stages[OTHER] += cpu
            continue
        total = sum(samples.values())
        for stage, n in samples.items():
            stages[stage] += cpu * n / total
    return {stage: value / seconds * 100 for stage, value in stages.items()}


class Profiler:
    """py-spy on this process for `seconds`; `await stop()` returns % of a core per stage."""

    def __init__(self, seconds: float, rate: int = RATE) -> None:
        self.seconds = seconds
        self.rate = rate
        self.own_cpu_percent = float("nan")  # py-spy's own CPU over the window, % of a core
        self._dir = tempfile.TemporaryDirectory(prefix="bench-profile-")
        self._out = Path(self._dir.name) / "raw.txt"
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._cpu_before = thread_cpu()
        self._children_before = _children_cpu()
        self._started = time.monotonic()
        exe = _executable() or "py-spy"
        self._process = await asyncio.create_subprocess_exec(
            exe, "record", "--pid", str(os.getpid()), "--rate", str(self.rate), "--duration", str(round(self.seconds)),
            "--format", "raw", "--threads", "--nonblocking", "-o", str(self._out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)

    async def stop(self) -> dict[str, float]:
        assert self._process is not None
        _, err = await self._process.communicate()
        after, seconds = thread_cpu(), time.monotonic() - self._started
        self.own_cpu_percent = (_children_cpu() - self._children_before) / seconds * 100
        cpu = {tid: value - self._cpu_before.get(tid, 0.0) for tid, value in after.items()}
        try:
            if not self._out.exists():
                raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}")
            raw = self._out.read_text()
            if os.environ.get("BENCH_PROFILE_RAW"):  # keep the stacks for a look: BENCH_PROFILE_RAW=dir
                keep = Path(os.environ["BENCH_PROFILE_RAW"]) / f"profile-{time.monotonic_ns()}.txt"
                keep.write_text(raw + "".join(f"cpu {tid} {value:.4f}\n" for tid, value in cpu.items()))
            return parse(raw, cpu, seconds)
        finally:
            self._dir.cleanup()


def _children_cpu() -> float:
    """CPU seconds of this process's ended children (py-spy, once it has been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

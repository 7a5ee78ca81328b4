"""`python -m bot --processes N`: one bot process per core, each running its own range of shards.

One Python event loop per process is the ceiling (about 20 busy guilds on one core), and guilds are what
Discord's shards divide, so the bot scales out like large Discord bots: N processes, each given
`SHARD_COUNT` and its own `SHARD_IDS`, sharing one database. This supervisor starts them (`python -m bot
run` with those two variables set), writes each one's output to its own log file, restarts a process that
crashes (with backoff), stops everything when a process reports a configuration error (restarting would
fail the same way), and passes SIGTERM/SIGINT on so every process says goodbye and stops cleanly.

The supervisor is the only one that signals its children: they run in a session of their own, so Ctrl-C in
the terminal reaches them once, as the supervisor's SIGTERM, not twice. A child notices when the supervisor
itself dies (`kill -9`, the OOM killer) and stops too (`follow_supervisor`), so no orphan keeps running its
shards beside the processes of the next start. When a child cannot start, its one-sentence reason (the
`Cannot start: …` line `python -m bot` prints) is repeated on the supervisor's own output.

On several machines, run one supervisor per machine (or one systemd unit per shard range) with the same
SHARD_COUNT, disjoint SHARD_IDS and a shared DATABASE_URL; see README "Scaling out".
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.shards import format_shard_ids, split_shards

log = logging.getLogger(__name__)

EXIT_CONFIG = 78  # what `python -m bot` returns for a bad setting (bot.__main__)
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
HEALTHY_AFTER_S = 60.0  # a process that ran this long before crashing starts again at the first backoff
STOP_TIMEOUT_S = 30.0
SUPERVISOR_PID = "TUTOR_SUPERVISOR_PID"  # set in each child's environment: the process that must outlive it
CANNOT_START = "Cannot start: "  # how `python -m bot` says why it stopped (bot.__main__)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True, slots=True)
class ProcessPlan:
    """One bot process: which shards it runs and where its log goes."""

    index: int
    processes: int
    shard_count: int
    shard_ids: tuple[int, ...]
    log_path: Path

    @property
    def name(self) -> str:
        return f"process {self.index + 1}/{self.processes}"

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        """The child's environment: the parent's, plus its shards (these win over .env)."""
        return {**base, "SHARD_COUNT": str(self.shard_count), "SHARD_IDS": format_shard_ids(self.shard_ids),
                "TUTOR_PROCESS": f"{self.index + 1}/{self.processes}"}

    def describe(self) -> str:
        return (f"{self.name}: shards {format_shard_ids(self.shard_ids)} of {self.shard_count}, "
                f"log {self.log_path}")


def plan_processes(processes: int, shard_count: int | None, log_dir: Path) -> list[ProcessPlan]:
    """Split `shard_count` shards (default: one per process) into contiguous ranges, one per process."""
    count = shard_count or processes
    return [ProcessPlan(index, processes, count, ids, log_dir / f"bot-{index + 1}.log")
            for index, ids in enumerate(split_shards(count, processes))]


class Supervisor:
    """Runs one child per plan until all have stopped; `stop()` (or a signal) ends them all."""

    def __init__(self, plans: Sequence[ProcessPlan], command: Sequence[str] | None = None, *,
                 first_backoff_s: float = FIRST_BACKOFF_S, stop_timeout_s: float = STOP_TIMEOUT_S,
                 out=None) -> None:
        self._plans = list(plans)
        self._command = list(command or [sys.executable, "-m", "bot", "run"])
        self._first_backoff_s = first_backoff_s
        self._stop_timeout_s = stop_timeout_s
        self._out = out or sys.stdout
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self.exit_code = 0
        self.starts: dict[int, int] = {plan.index: 0 for plan in self._plans}
        self._reasons: dict[int, str] = {}  # each process's last `Cannot start` sentence, told once

    def say(self, line: str) -> None:
        """One line for the operator (the supervisor's own output; each child writes to its own log)."""
        print(f"supervisor: {line}", file=self._out, flush=True)

    async def run(self) -> int:
        """Start every child and keep them running; returns 0, or the first configuration error's code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            await asyncio.gather(*(self._keep_running(plan) for plan in self._plans))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        self.say(f"all processes stopped (exit {self.exit_code})")
        return self.exit_code

    def stop(self) -> None:
        """Ask every child to stop (SIGTERM); the ones still running after the timeout are killed."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.say("stopping every process")
        for child in self._children.values():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    async def _keep_running(self, plan: ProcessPlan) -> None:
        backoff = self._first_backoff_s
        while not self._stopping.is_set():
            started = time.monotonic()
            code = await self._run_once(plan)
            if self._stopping.is_set():
                return
            if code == 0:
                self.say(f"{plan.name} finished")
                return
            if code == EXIT_CONFIG:
                self.say(f"{plan.name} stopped on a configuration problem (see {plan.log_path}); stopping all")
                self.exit_code = EXIT_CONFIG
                self.stop()
                return
            if time.monotonic() - started >= HEALTHY_AFTER_S:
                backoff = self._first_backoff_s
            self.say(f"{plan.name} exited with {code}; restarting in {backoff:.0f} s (see {plan.log_path})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _run_once(self, plan: ProcessPlan) -> int:
        plan.log_path.parent.mkdir(parents=True, exist_ok=True)
        with plan.log_path.open("ab") as log_file:
            started_at = log_file.tell()
            child = await asyncio.create_subprocess_exec(
                *self._command, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                env={**plan.environment(dict(os.environ)), SUPERVISOR_PID: str(os.getpid())},
                start_new_session=True)  # Ctrl-C reaches the supervisor only; it passes SIGTERM on (stop())
            self._children[plan.index] = child
            self.starts[plan.index] += 1
            self.say(f"{plan.describe()}, pid {child.pid}")
            try:
                if self._stopping.is_set():  # stop() ran while this child was being started
                    child.send_signal(signal.SIGTERM)
                code = await self._wait(child)
            finally:
                self._children.pop(plan.index, None)
        if code != 0 and not self._stopping.is_set() and (reason := last_words(plan.log_path, started_at)):
            if self._reasons.get(plan.index) == reason:  # offline for an hour: one sentence, not sixty
                self.say(f"{plan.name} still cannot start (the same reason)")
            else:
                self.say(f"{plan.name} cannot start: {reason}")
            self._reasons[plan.index] = reason
        return code

    async def _wait(self, child: asyncio.subprocess.Process) -> int:
        wait = asyncio.ensure_future(child.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({wait, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not wait.done():  # stopping: give it time to say goodbye, then kill
                try:
                    await asyncio.wait_for(asyncio.shield(wait), self._stop_timeout_s)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
                    await wait
            return wait.result()
        finally:
            stopping.cancel()


def last_words(log_path: Path, since: int) -> str | None:
    """The `Cannot start: …` sentence a child wrote to its log after byte `since`, without the prefix."""
    with log_path.open("rb") as log_file:
        log_file.seek(max(since, log_file.seek(0, os.SEEK_END) - 65536))
        lines = log_file.read().decode(errors="replace").splitlines()
    reasons = [line.removeprefix(CANNOT_START) for line in lines if line.startswith(CANNOT_START)]
    return reasons[-1] if reasons else None


def follow_supervisor(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """In a child of `--processes` (SUPERVISOR_PID is set): get SIGTERM when the supervisor dies, however it
    dies, and stop at once if it is already gone. Linux only (prctl); elsewhere a no-op."""
    supervisor = environ.get(SUPERVISOR_PID)
    if not supervisor or not sys.platform.startswith("linux"):
        return
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("launcher.pdeathsig_failed", extra={"errno": ctypes.get_errno()})
        return
    if os.getppid() != int(supervisor):  # it died before prctl took effect: nothing would signal us now
        os.kill(os.getpid(), signal.SIGTERM)


def run_processes(processes: int, shard_count: int | None, log_dir: Path) -> int:
    """The `--processes N` entry point: print each process's plan, supervise them until they stop."""
    plans = plan_processes(processes, shard_count, log_dir)
    return asyncio.run(Supervisor(plans).run())

"""bot.launcher: `--processes N` starts N real child processes, each with its own shards and log file,
restarts a crashed one, stops all on a configuration error, and passes SIGTERM on."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bot.__main__ import run_processes
from bot.config import load_settings
from bot.launcher import EXIT_CONFIG, Supervisor, plan_processes

ROOT = Path(__file__).resolve().parents[2]

# A stand-in for `python -m bot run`: real processes that behave as CHILD_MODE says.
CHILD = r"""
import os, signal, sys, time
from bot.launcher import follow_supervisor
follow_supervisor()  # as `python -m bot run` does
index = os.environ["TUTOR_PROCESS"].split("/")[0]
print(f"shards {os.environ['SHARD_IDS']} of {os.environ['SHARD_COUNT']} as {os.environ['TUTOR_PROCESS']}", flush=True)
mode = os.environ["CHILD_MODE"]
marker = os.path.join(os.environ["CHILD_DIR"], f"started-{index}")
if mode == "crash-once" and not os.path.exists(marker):
    open(marker, "w").close()
    sys.exit(3)
if mode == "unreachable" and not os.path.exists(marker):
    open(marker, "w").close()
    print("Cannot start: the bot could not reach Discord (discord.com): check that this machine is online.",
          file=sys.stderr, flush=True)
    sys.exit(69)
if mode == "unreachable-twice":
    tries = os.path.join(os.environ["CHILD_DIR"], f"tries-{index}")
    count = len(open(tries).read()) if os.path.exists(tries) else 0
    open(tries, "a").write("x")
    if count < 2:
        print("Cannot start: the bot could not reach Discord (discord.com): check that this machine is online.",
              file=sys.stderr, flush=True)
        sys.exit(69)
    sys.exit(0)
if mode == "config-error" and index == "2":
    while not os.path.exists(os.path.join(os.environ["CHILD_DIR"], "listening-1")):
        time.sleep(0.01)  # fail only once process 1 listens for SIGTERM, so "goodbye" shows it got one
    sys.exit(78)
if mode in ("serve", "config-error", "deaf"):
    if mode == "deaf":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: (print("goodbye", flush=True), sys.exit(0)))
    signal.signal(signal.SIGINT, lambda *_: print("interrupted", flush=True))
    with open(os.path.join(os.environ["CHILD_DIR"], f"listening-{index}"), "w") as listening:
        listening.write(str(os.getpid()))
    while True:
        time.sleep(0.05)
"""


# The supervisor in a process of its own (as `python -m bot --processes 2` runs it), for the signal tests.
SUPERVISOR = r"""
import asyncio, sys
from pathlib import Path
from bot.launcher import Supervisor, plan_processes
plans = plan_processes(2, None, Path(sys.argv[1]))
sys.exit(asyncio.run(Supervisor(plans, [sys.executable, "-c", sys.argv[2]], first_backoff_s=0.05).run()))
"""


@pytest.fixture
def child(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))

    def use(mode: str, marker_dir: Path = tmp_path) -> list[str]:
        marker_dir.mkdir(exist_ok=True)
        monkeypatch.setenv("CHILD_MODE", mode)
        monkeypatch.setenv("CHILD_DIR", str(marker_dir))
        return [sys.executable, "-c", CHILD]
    return use


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a container's PID 1 may never reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def supervisor_process(tmp_path: Path, command: list[str]) -> tuple[asyncio.subprocess.Process, list[int]]:
    """A real supervisor process in a process group of its own (as a terminal's), and its children's pids."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SUPERVISOR, str(tmp_path / "logs"), command[-1], cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, start_new_session=True)
    await wait_until_listening(tmp_path, 2)
    return process, [int((tmp_path / f"listening-{i}").read_text()) for i in (1, 2)]


def supervisor(tmp_path: Path, command: list[str], processes: int = 2, shard_count: int | None = None,
               **options) -> tuple[Supervisor, io.StringIO]:
    out = io.StringIO()
    plans = plan_processes(processes, shard_count, tmp_path / "logs")
    return Supervisor(plans, command, first_backoff_s=0.05, out=out, **options), out


async def wait_until_listening(marker_dir: Path, processes: int) -> None:
    """Until every child has its SIGTERM handler in place (it leaves a marker file)."""
    for _ in range(400):
        if all((marker_dir / f"listening-{i + 1}").exists() for i in range(processes)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("children did not start")


def test_plans_split_the_shards_and_name_one_log_each(tmp_path: Path) -> None:
    """Default: one shard per process; with SHARD_COUNT, contiguous ranges; each process its own log file."""
    plans = plan_processes(2, None, tmp_path)
    assert [(p.shard_count, p.shard_ids, p.log_path.name) for p in plans] == [(2, (0,), "bot-1.log"),
                                                                             (2, (1,), "bot-2.log")]
    plans = plan_processes(2, 5, tmp_path)
    assert [p.shard_ids for p in plans] == [(0, 1, 2), (3, 4)]
    assert plans[1].environment({"X": "1"}) == {"X": "1", "SHARD_COUNT": "5", "SHARD_IDS": "3-4",
                                                "TUTOR_PROCESS": "2/2"}
    assert plans[0].describe() == f"process 1/2: shards 0-2 of 5, log {tmp_path / 'bot-1.log'}"


async def test_each_process_runs_its_own_shards_into_its_own_log(tmp_path: Path, child) -> None:
    """Two real children: each sees its own SHARD_IDS, writes only to its own log; the supervisor prints a
    line per process (shards, pid, log) and returns 0 when they finish."""
    sup, out = supervisor(tmp_path, child("exit"), shard_count=4)
    assert await sup.run() == 0
    assert (tmp_path / "logs" / "bot-1.log").read_text() == "shards 0-1 of 4 as 1/2\n"
    assert (tmp_path / "logs" / "bot-2.log").read_text() == "shards 2-3 of 4 as 2/2\n"
    lines = out.getvalue().splitlines()
    assert any(line.startswith("supervisor: process 1/2: shards 0-1 of 4") and "pid" in line for line in lines)
    assert any(line.startswith("supervisor: process 2/2: shards 2-3 of 4") for line in lines)


async def test_a_crashed_process_is_restarted(tmp_path: Path, child) -> None:
    """A child that dies (exit 3) is started again after the backoff, with the same shards and log."""
    sup, out = supervisor(tmp_path, child("crash-once"))
    assert await sup.run() == 0
    assert sup.starts == {0: 2, 1: 2}
    assert "exited with 3; restarting" in out.getvalue()
    assert (tmp_path / "logs" / "bot-2.log").read_text().count("shards 1 of 2") == 2


async def test_a_configuration_error_stops_every_process(tmp_path: Path, child) -> None:
    """Exit 78 (a bad setting) would repeat on restart: the supervisor stops the others and returns 78."""
    sup, out = supervisor(tmp_path, child("config-error"))
    assert await asyncio.wait_for(sup.run(), 20) == EXIT_CONFIG
    assert "configuration problem" in out.getvalue()
    assert "goodbye" in (tmp_path / "logs" / "bot-1.log").read_text()  # it got SIGTERM, not SIGKILL
    assert sup.starts == {0: 1, 1: 1}


async def test_stop_passes_sigterm_on_and_kills_what_ignores_it(tmp_path: Path, child) -> None:
    """stop() (what SIGTERM/SIGINT to the supervisor does): children get SIGTERM; one that ignores it is
    killed after the timeout; nothing is restarted."""
    sup, _ = supervisor(tmp_path, child("serve"))
    running = asyncio.ensure_future(sup.run())
    await wait_until_listening(tmp_path, 2)
    sup.stop()
    assert await asyncio.wait_for(running, 20) == 0
    assert all("goodbye" in (tmp_path / "logs" / f"bot-{i}.log").read_text() for i in (1, 2))

    deaf, _ = supervisor(tmp_path / "deaf", child("deaf", tmp_path / "deaf"), stop_timeout_s=0.5)
    running = asyncio.ensure_future(deaf.run())
    await wait_until_listening(tmp_path / "deaf", 2)
    deaf.stop()
    assert await asyncio.wait_for(running, 20) == 0
    assert deaf.starts == {0: 1, 1: 1}


async def test_a_child_that_cannot_start_says_why_on_the_supervisors_output(tmp_path: Path, child) -> None:
    """The operator reads each process's one-sentence reason where they started it, not only in its log."""
    sup, out = supervisor(tmp_path, child("unreachable"))
    assert await sup.run() == 0
    lines = out.getvalue().splitlines()
    for name in ("process 1/2", "process 2/2"):
        assert (f"supervisor: {name} cannot start: the bot could not reach Discord (discord.com): check that "
                "this machine is online.") in lines
    assert sup.starts == {0: 2, 1: 2}


async def test_the_same_reason_again_is_not_repeated_in_full(tmp_path: Path, child) -> None:
    """Offline for a while: each restart that fails the same way says so in a few words, not the whole sentence."""
    sup, out = supervisor(tmp_path, child("unreachable-twice"))
    assert await sup.run() == 0
    lines = out.getvalue().splitlines()
    for name in ("process 1/2", "process 2/2"):
        assert sum("could not reach Discord" in line and name in line for line in lines) == 1
        assert f"supervisor: {name} still cannot start (the same reason)" in lines
    assert sup.starts == {0: 3, 1: 3}


async def test_ctrl_c_reaches_each_child_once_as_sigterm(tmp_path: Path, child) -> None:
    """Ctrl-C in a terminal signals the whole foreground group: the children, in a session of their own, get
    only the supervisor's SIGTERM (one graceful stop), not a SIGINT besides."""
    process, pids = await supervisor_process(tmp_path, child("serve"))
    os.killpg(process.pid, signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 30) == 0
    for i in (1, 2):
        log = (tmp_path / "logs" / f"bot-{i}.log").read_text()
        assert "goodbye" in log and "interrupted" not in log, log
    assert not any(is_running(pid) for pid in pids)


async def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path, child) -> None:
    """`kill -9` (or the OOM killer) on the supervisor: no orphan keeps running its shards (the next start
    would run them twice); each child gets SIGTERM and says goodbye."""
    process, pids = await supervisor_process(tmp_path, child("serve"))
    process.kill()
    await process.wait()
    for _ in range(200):
        if not any(is_running(pid) for pid in pids):
            break
        await asyncio.sleep(0.05)
    running = [pid for pid in pids if is_running(pid)]
    for pid in running:
        os.kill(pid, signal.SIGKILL)
    assert not running, "children outlived their supervisor"
    assert all("goodbye" in (tmp_path / "logs" / f"bot-{i}.log").read_text() for i in (1, 2))


def test_processes_refuses_shard_ids_it_would_override(tmp_path: Path) -> None:
    """`python -m bot --processes 2` with SHARD_IDS set: one sentence, exit 78, nothing started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "GEMINI_", "SHARD_"))}
    env.update({"PYTHONPATH": str(ROOT), "DISCORD_TOKEN": "t", "GEMINI_API_KEY": "k", "SHARD_COUNT": "4",
                "SHARD_IDS": "0-1"})
    result = subprocess.run([sys.executable, "-m", "bot", "--processes", "2"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_CONFIG
    assert "SHARD_IDS is set" in result.stderr and not (tmp_path / "logs").exists()


@pytest.mark.parametrize(("processes", "shard_count", "expected"), [
    (0, None, "Cannot start: --processes needs a whole number of 1 or more (one per core is a good start).\n"),
    (-2, None, "Cannot start: --processes needs a whole number of 1 or more (one per core is a good start).\n"),
    (3, 2, "Cannot start: 3 processes need at least 3 shards, but SHARD_COUNT is 2: raise SHARD_COUNT or start "
           "fewer processes.\n"),
])
def test_a_process_count_that_cannot_work_is_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          processes: int, shard_count: int | None,
                                                          expected: str) -> None:
    """`--processes 0` or more processes than shards: a sentence that says what to change, exit 78, nothing run."""
    settings = load_settings(discord_token="t", gemini_api_key="k", shard_count=shard_count, _env_file=None)
    assert run_processes(settings, processes, tmp_path / "logs") == EXIT_CONFIG
    assert capsys.readouterr().err == expected and not (tmp_path / "logs").exists()

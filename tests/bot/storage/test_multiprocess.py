"""Several bot processes share one store: two real processes writing turns at the same time lose nothing, on
the SQLite file in WAL mode ("database is locked" never reaches the code that stores a kid's turn) and on
PostgreSQL (both migrate the empty database together, then write side by side)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.storage import Database, Repository
from tests.conftest import database_location

REPO_ROOT = Path(__file__).resolve().parents[3]

# One shard process: its own guild and session, a turn per transaction as fast as it can, and a moderator's
# read now and then. A turn's id is printed only after add_turn returned (committed).
WRITER = r"""
import asyncio, logging, sys, time
from bot.storage import Database, Repository

async def main(location: str, go: str, guild_id: int, turns: int, busy_timeout_ms: int) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    db = await Database.open(location, busy_timeout_ms=busy_timeout_ms)
    repo = Repository(db)
    session_id = await repo.start_session(guild_id, 2, 3, "Alex", "space", 8)
    print(f"session {session_id}", flush=True)
    gives_up = time.monotonic() + 120  # a test that failed (or was killed) must not leave this behind
    while not __import__("os").path.exists(go):
        if time.monotonic() > gives_up:
            sys.exit("no go signal")
        await asyncio.sleep(0.01)
    for index in range(turns):
        now = time.time()
        turn_id = await repo.add_turn(guild_id, session_id, "child" if index % 2 == 0 else "tutor",
                                      f"turn {index}", now, now, speaker_id=3)
        print(f"turn {turn_id} {index}", flush=True)
        if index % 25 == 0:
            await repo.list_sessions(guild_id)
    await repo.end_session(guild_id, session_id, "stopped")
    await db.close()
    print("done", flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
"""


async def run_writer(location: str, go: Path, guild_id: int, busy_timeout_ms: int,
                     turns: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, location, str(go), str(guild_id), str(turns), str(busy_timeout_ms),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO_ROOT, env=env)


async def confirmed_turns(writers: dict[int, asyncio.subprocess.Process],
                          go: Callable[[], None], turns: int) -> tuple[dict[int, dict[int, int]], dict[int, int]]:
    """Wait until both writers are connected and migrated, `go()`, and read the turns each confirmed."""
    sessions: dict[int, int] = {}
    for guild_id, process in writers.items():  # both are connected and migrated before either writes
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode().split()
        if not line:
            _, stderr = await process.communicate()
            raise AssertionError(f"writer died while opening the database: {stderr.decode()[-2000:]}")
        assert line[0] == "session", line
        sessions[guild_id] = int(line[1])
    go()
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in writers.values())), timeout=120)
    confirmed: dict[int, dict[int, int]] = {}
    for (guild_id, process), (stdout, stderr) in zip(writers.items(), outputs, strict=True):
        errors = stderr.decode()
        assert process.returncode == 0, errors[-2000:]
        assert "Traceback" not in errors and "database is locked" not in errors, errors[-2000:]
        lines = stdout.decode().split("\n")
        assert "done" in lines
        confirmed[guild_id] = {int(turn_id): int(index)
                               for kind, turn_id, index in (ln.split() for ln in lines if ln.startswith("turn"))}
        assert len(confirmed[guild_id]) == turns
    return confirmed, sessions


# PostgreSQL takes four round trips per turn; 200 each still interleave thousands of statements.
@pytest.mark.parametrize(("backend", "busy_timeout_ms", "turns"),
                         [("sqlite", 5000, 1000), ("sqlite", 5, 1000), ("postgres", 0, 200)],
                         ids=["sqlite-waits", "python-retries", "postgres"], indirect=["backend"])
async def test_two_processes_writing_turns_concurrently_lose_nothing(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest, busy_timeout_ms: int, turns: int) -> None:
    """Two writer processes (two shard ranges) hammer one database: every confirmed turn is stored once, in
    order, each process exits cleanly, and no lock error escaped add_turn (at most retry warnings in logs)."""
    location = await database_location(backend, request, tmp_path)
    go = tmp_path / "go"
    # Created and migrated by the two writers themselves, racing each other: processes starting together.
    writers = {guild_id: await run_writer(location, go, guild_id, busy_timeout_ms, turns)
               for guild_id in (1 << 22, 2 << 22)}
    try:
        confirmed, sessions = await confirmed_turns(writers, go.touch, turns)
    finally:  # a failed assertion must not leave the other writer running
        for process in writers.values():
            if process.returncode is None:
                process.kill()
                await process.wait()
    db = await Database.open(location)
    try:
        if backend == "sqlite":
            assert (await db.fetch_one("PRAGMA integrity_check"))[0] == "ok"
        repo = Repository(db)
        for guild_id, session_id in sessions.items():
            stored = await repo.get_turns(guild_id, session_id)
            assert [turn.text for turn in stored] == [f"turn {i}" for i in range(turns)]
            assert {turn.id: int(turn.text.split()[1]) for turn in stored} == confirmed[guild_id]
            assert not (await repo.get_session(guild_id, session_id)).is_running
    finally:
        await db.close()

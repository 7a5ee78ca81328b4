"""Durability: a killed process keeps every committed turn; a database locked by another process loses nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from bot.storage.db import Database
from bot.storage.repository import Repository

REPO_ROOT = Path(__file__).resolve().parents[3]

# Runs in a child process: one session, then turns forever; a turn's id is printed only after add_turn returned.
WRITER = r"""
import asyncio, sys, time
from bot.storage.db import Database
from bot.storage.repository import Repository

async def main(path: str) -> None:
    db = await Database.open(path)
    repo = Repository(db)
    session_id = await repo.start_session(1, 2, 3, "Alex", "space", 8)
    print(f"session {session_id}", flush=True)
    index = 0
    while True:
        now = time.time()
        role = "child" if index % 2 == 0 else "tutor"
        turn_id = await repo.add_turn(1, session_id, role, f"turn {index}", now, now, speaker_id=3)
        print(f"turn {turn_id} {index}", flush=True)
        index += 1

asyncio.run(main(sys.argv[1]))
"""


async def run_writer_until_killed(path: Path, turns_before_kill: int) -> tuple[int, dict[int, int]]:
    """Start the writer, SIGKILL it after `turns_before_kill` confirmed turns, return (session id, {turn id: index})."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(path), stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT, env=env)
    assert process.stdout is not None
    confirmed: dict[int, int] = {}
    session_id = -1
    try:
        while len(confirmed) < turns_before_kill:
            line = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
            assert line, "writer exited early"
            kind, ident, *rest = line.split()
            if kind == "session":
                session_id = int(ident)
            else:
                confirmed[int(ident)] = int(rest[0])
        process.send_signal(signal.SIGKILL)
        # Lines printed between our last read and the kill were also committed: collect them too.
        for line in (await process.stdout.read()).decode().splitlines():
            _, ident, index = line.split()
            confirmed[int(ident)] = int(index)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    # 255 is asyncio's code when another child watcher in the test process reaped the pid first
    assert process.returncode in (-signal.SIGKILL, 255)
    return session_id, confirmed


@pytest.mark.parametrize("turns_before_kill", [1, 40, 400])
async def test_sigkill_mid_conversation_keeps_every_confirmed_turn(tmp_path: Path, turns_before_kill: int) -> None:
    """After SIGKILL, reopening shows every turn whose add_turn returned, intact, and at most one more."""
    path = tmp_path / "tutor.sqlite3"
    session_id, confirmed = await run_writer_until_killed(path, turns_before_kill)
    db = await Database.open(path)
    try:
        assert (await db.fetch_one("PRAGMA integrity_check"))[0] == "ok"
        repo = Repository(db)
        assert await repo.close_dangling_sessions() == 1
        stored = {turn.id: turn for turn in await repo.get_turns(1, session_id)}
        missing = set(confirmed) - set(stored)
        assert not missing, f"{len(missing)} confirmed turn(s) lost"
        assert len(stored) - len(confirmed) <= 1  # at most the one committed as the kill landed
        for turn_id, index in confirmed.items():
            assert stored[turn_id].text == f"turn {index}"
        session = await repo.get_session(1, session_id)
        assert session.end_reason == "bot restarted" and session.ended_at == max(t.ended_at for t in stored.values())
    finally:
        await db.close()


@pytest.mark.parametrize("busy_timeout_ms", [5000, 50], ids=["sqlite-waits", "python-retries"])
async def test_two_second_exclusive_lock_delays_but_loses_nothing(
    tmp_path: Path, busy_timeout_ms: int, caplog: pytest.LogCaptureFixture,
) -> None:
    """Another connection holds BEGIN EXCLUSIVE for 2 s: every add_turn issued meanwhile commits afterwards."""
    path = tmp_path / "tutor.sqlite3"
    db = await Database.open(path, busy_timeout_ms=busy_timeout_ms)
    repo = Repository(db)
    session_id = await repo.start_session(1, 2, 3, "Alex", "space", 8)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    other.execute("INSERT INTO turns (session_id, guild_id, role, text, started_at, ended_at) "
                  "VALUES (?, 1, 'system', 'from the other process', 0, 0)", (session_id,))
    released = asyncio.Event()

    def release() -> None:
        other.execute("COMMIT")
        released.set()

    caplog.set_level(logging.WARNING, logger="bot.storage.db")
    asyncio.get_running_loop().call_later(2.0, release)
    try:
        ids = await asyncio.gather(*(
            repo.add_turn(1, session_id, "child", f"said while locked {i}", 1.0 + i, 1.5 + i, speaker_id=3)
            for i in range(5)))
        assert released.is_set(), "add_turn returned while the other connection still held the lock"
        texts = [turn.text for turn in await repo.get_turns(1, session_id)]
        assert texts == ["from the other process"] + [f"said while locked {i}" for i in range(5)]
        assert len(set(ids)) == 5
    finally:
        other.close()
        await db.close()
    retries = [r for r in caplog.records if r.getMessage() == "storage.locked_retry"]
    assert bool(retries) == (busy_timeout_ms < 2000)

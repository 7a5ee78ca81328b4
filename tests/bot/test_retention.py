"""Retention: the purge pass on a real SQLite file, and the hourly task's lifecycle."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from bot.retention import PURGE_INTERVAL_S, RetentionTask, purge_expired
from bot.storage import Database, Repository

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


async def ended_session(repository: Repository, guild_id: int, days_ago: float, turns: int = 2) -> int:
    start = NOW - timedelta(days=days_ago)
    session_id = await repository.start_session(guild_id, 5, 9, "Ada", "space", 8, started_at=start)
    for n in range(turns):
        at = start + timedelta(seconds=n)
        await repository.add_turn(guild_id, session_id, "tutor", f"t{n}", at, at)
    await repository.end_session(guild_id, session_id, "stopped", ended_at=start + timedelta(minutes=5))
    return session_id


async def test_purge_deletes_only_expired_per_guild_retention(repository, caplog):
    """Each guild's own retention applies; counts come back per guild and are logged."""
    await repository.update_settings(1, retention_days=7)
    old_1 = await ended_session(repository, 1, days_ago=10, turns=3)
    fresh_1 = await ended_session(repository, 1, days_ago=2)
    kept_2 = await ended_session(repository, 2, days_ago=10)  # guild 2: default 30 days
    old_2 = await ended_session(repository, 2, days_ago=40, turns=1)
    with caplog.at_level(logging.INFO, logger="bot.retention"):
        removed = await purge_expired(repository, now=NOW)
    assert removed == {1: (1, 3), 2: (1, 1)}
    assert await repository.get_session(1, old_1) is None and await repository.get_session(2, old_2) is None
    assert await repository.get_session(1, fresh_1) is not None and await repository.get_session(2, kept_2) is not None
    assert await repository.get_turns(1, old_1) == []
    assert any(r.getMessage() == "retention.pass" and r.sessions == 2 and r.turns == 4 for r in caplog.records)


async def test_purge_with_nothing_to_do(repository):
    """An empty database purges nothing and says so."""
    assert await purge_expired(repository, now=NOW) == {}


class StepSleep:
    """Stands in for asyncio.sleep: records the interval, then lets the test decide when the next pass runs."""

    def __init__(self) -> None:
        self.intervals: list[float] = []
        self.asleep = asyncio.Event()
        self.wake = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.intervals.append(seconds)
        self.asleep.set()
        await self.wake.wait()
        self.wake.clear()

    async def next_pass(self) -> None:
        self.asleep.clear()
        self.wake.set()
        await asyncio.wait_for(self.asleep.wait(), 5)


async def test_task_runs_at_start_then_hourly(repository):
    """One pass right at start, then one per hour-long sleep; data expiring later is purged on a later pass."""
    sleep = StepSleep()
    task = RetentionTask(repository, sleep=sleep)
    old = await ended_session(repository, 1, days_ago=31)
    task.start()
    await asyncio.wait_for(sleep.asleep.wait(), 5)
    assert task.passes == 1 and await repository.get_session(1, old) is None
    assert sleep.intervals == [PURGE_INTERVAL_S] == [3600.0]
    await sleep.next_pass()
    assert task.passes == 2 and len(sleep.intervals) == 2
    await task.aclose()
    assert not task.running


async def test_failing_pass_is_logged_and_loop_continues(tmp_path, caplog):
    """A pass that raises is counted and logged; the next tick runs again."""
    db = await Database.open(tmp_path / "closed.sqlite3")
    await db.close()  # every query now fails: "database is closed"
    sleep = StepSleep()
    task = RetentionTask(Repository(db), sleep=sleep)
    with caplog.at_level(logging.ERROR, logger="bot.retention"):
        task.start()
        await asyncio.wait_for(sleep.asleep.wait(), 5)
        await sleep.next_pass()
    assert (task.failures, task.passes) == (2, 0)
    assert any(r.getMessage() == "retention.failed" for r in caplog.records)
    await task.aclose()


async def test_start_is_idempotent_and_close_twice_is_safe(repository):
    """A second start does not start a second loop; aclose can be called again."""
    sleep = StepSleep()
    task = RetentionTask(repository, sleep=sleep)
    task.start()
    task.start()
    await asyncio.wait_for(sleep.asleep.wait(), 5)
    await asyncio.sleep(0.05)  # a second loop, if one had started, would have finished its first pass by now
    assert task.passes == 1 and sleep.intervals == [PURGE_INTERVAL_S]
    await task.aclose()
    await task.aclose()
    assert not task.running

"""Transcripts are kept for each guild's `retention_days`, then deleted for real.

`purge_expired` does one pass over every guild; `RetentionTask` runs it at start-up and then every
hour, each time followed by `after_pass` (the alerts cog deletes the posts that quoted what was purged, and
any a failed delete left). A failing pass is logged and retried at the next tick: it never stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bot.storage.repository import Repository

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 3600.0

Sleep = Callable[[float], Awaitable[None]]


async def purge_expired(repository: Repository, now: datetime | None = None) -> dict[int, tuple[int, int]]:
    """Delete every guild's sessions (and their turns) older than its retention; returns the counts per guild."""
    now = now or datetime.now(UTC)
    removed = await repository.purge_all_expired(now)
    for guild_id, (sessions, turns) in removed.items():
        log.info("retention.purged", extra={"guild_id": guild_id, "sessions": sessions, "turns": turns})
    log.info("retention.pass", extra={"guilds": len(removed),
                                      "sessions": sum(s for s, _ in removed.values()),
                                      "turns": sum(t for _, t in removed.values())})
    return removed


class RetentionTask:
    """Owns the hourly purge loop: `start()` once, `aclose()` to cancel and wait (idempotent)."""

    def __init__(self, repository: Repository, *, interval_s: float = PURGE_INTERVAL_S,
                 sleep: Sleep = asyncio.sleep, after_pass: Callable[[], Awaitable[None]] | None = None) -> None:
        self._repository = repository
        self._after_pass = after_pass  # e.g. deleting the alerts-channel posts of what the pass purged
        self._interval_s = interval_s
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        self.failures = 0

    @property
    def running(self) -> bool:
        """True while the loop task is alive."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop (first pass right away); a second call while running does nothing."""
        if self.running:
            return
        self._task = asyncio.create_task(self._run(), name="retention")

    async def _run(self) -> None:
        while True:
            try:
                await purge_expired(self._repository)
                if self._after_pass is not None:
                    await self._after_pass()
                self.passes += 1
            except Exception:
                self.failures += 1
                log.exception("retention.failed")
            await self._sleep(self._interval_s)

    async def aclose(self) -> None:
        """Cancel the loop and wait for it to finish."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

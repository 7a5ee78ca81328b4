"""The turn writer: one conversation's completed turns go to SQLite in order, off the audio path.

The Live event consumer only enqueues; this task commits each turn as soon as it can (so a crash loses at
most the turn in progress) and retries a refused write with backoff on top of the repository's own lock
retries, so a slow or briefly locked disk delays turns but never drops or reorders them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.storage.models import TurnRow
from bot.storage.repository import Repository

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0


@dataclass(frozen=True, slots=True)
class PendingTurn:
    """A completed turn ready to store (wall-clock times, speakers already named)."""

    role: str
    text: str
    started_at: datetime
    ended_at: datetime
    speaker_id: int | None = None
    speaker_name: str | None = None
    interrupted: bool = False
    flag_reason: str | None = None


class TurnWriter:
    """Owns the writer task; `stored`/`flagged` count what reached the database."""

    def __init__(self, repository: Repository, guild_id: int, session_id: int, *,
                 on_flagged: Callable[[TurnRow], Awaitable[None]]) -> None:
        self._repository = repository
        self._guild_id = guild_id
        self._session_id = session_id
        self._on_flagged = on_flagged
        self._queue: asyncio.Queue[PendingTurn] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.stored = 0
        self.flagged = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"turn-writer:{self._guild_id}")

    def put(self, turn: PendingTurn) -> None:
        """Queue a turn; never blocks, never fails."""
        self._queue.put_nowait(turn)

    async def close(self, drain_seconds: float) -> None:
        """Let queued turns reach the database (at most `drain_seconds`), then stop the task."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), drain_seconds)
        except TimeoutError:
            log.error("turns.unsaved", extra=self._tags(count=self._queue.qsize()))
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            turn = await self._queue.get()
            try:
                await self._write(turn)
            except Exception:  # reporting a flag failed: the turn itself is stored
                log.exception("turns.report_failed", extra=self._tags())
            finally:
                self._queue.task_done()

    async def _write(self, turn: PendingTurn) -> None:
        delay = FIRST_RETRY_S
        while True:
            try:
                row_id = await self._repository.add_turn(self._guild_id, self._session_id, **_fields(turn))
                break
            except LookupError:  # a moderator deleted this session meanwhile: nothing to attach it to
                log.warning("turns.session_deleted", extra=self._tags())
                return
            except ValueError:  # the turn itself is invalid: retrying can never succeed
                log.exception("turns.rejected", extra=self._tags(role=turn.role))
                return
            except Exception:
                log.exception("turns.write_failed", extra=self._tags(retry_in_s=delay))
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_S)
        self.stored += 1
        if turn.flag_reason:
            self.flagged += 1
            log.warning("turns.flagged", extra=self._tags(turn_id=row_id, reason=turn.flag_reason))
            rows = await self._repository.get_turns(self._guild_id, self._session_id)
            row = next((r for r in rows if r.id == row_id), None)
            if row is not None:
                await self._on_flagged(row)

    def _tags(self, **extra: Any) -> dict[str, Any]:
        return {"guild_id": self._guild_id, "session_id": self._session_id, **extra}


def _fields(turn: PendingTurn) -> dict[str, Any]:
    return {"role": turn.role, "text": turn.text, "started_at": turn.started_at, "ended_at": turn.ended_at,
            "speaker_id": turn.speaker_id, "speaker_name": turn.speaker_name, "interrupted": turn.interrupted,
            "flag_reason": turn.flag_reason}

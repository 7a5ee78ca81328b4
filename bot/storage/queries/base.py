"""What every query area shares: the database handle, one-statement writes, row → dataclass mapping."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from bot.shards import ALL_SHARDS, ShardScope
from bot.storage.db import Database, Row
from bot.storage.models import SessionRow, SessionSummaryRow, TurnRow, from_epoch

Timestamp = datetime | float
MAX_PAGE = 500


def current_time() -> float:
    return time.time()


def day_start(at: float) -> float:
    """The start of the day `at` falls in (UTC midnight): where daily minutes and the daily budget reset."""
    return from_epoch(at).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def page_size(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    return limit


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def session_row(row: Row) -> SessionRow:
    return SessionRow(
        id=row["id"], guild_id=row["guild_id"], channel_id=row["channel_id"], starter_id=row["starter_id"],
        starter_name=row["starter_name"], level=row["level"], age=row["age"],
        started_at=from_epoch(row["started_at"]),
        ended_at=None if row["ended_at"] is None else from_epoch(row["ended_at"]),
        end_reason=row["end_reason"], resumption_handle=row["resumption_handle"], summary=row["summary"],
        summary_status=row["summary_status"], language=row["language"],
    )


def turn_row(row: Row) -> TurnRow:
    return TurnRow(
        id=row["id"], session_id=row["session_id"], guild_id=row["guild_id"], role=row["role"],
        speaker_id=row["speaker_id"], speaker_name=row["speaker_name"], text=row["text"],
        started_at=from_epoch(row["started_at"]), ended_at=from_epoch(row["ended_at"]),
        interrupted=bool(row["interrupted"]), flag_reason=row["flag_reason"],
    )


def summary_row(row: Row, at: float) -> SessionSummaryRow:
    end = row["ended_at"] if row["ended_at"] is not None else max(at, row["started_at"])
    return SessionSummaryRow(
        id=row["id"], guild_id=row["guild_id"], channel_id=row["channel_id"], starter_id=row["starter_id"],
        starter_name=row["starter_name"], level=row["level"], age=row["age"],
        started_at=from_epoch(row["started_at"]),
        ended_at=None if row["ended_at"] is None else from_epoch(row["ended_at"]),
        end_reason=row["end_reason"], summary_status=row["summary_status"],
        duration=timedelta(seconds=end - row["started_at"]),
        turn_count=row["turn_count"], flagged_count=row["flagged_count"],
        cost_usd=float(row["cost_usd"]), total_tokens=int(row["total_tokens"]),
    )


class Queries:
    """Base of each query area: holds the `Database` and runs single-statement writes.

    `shards`: the guilds this process looks after (`bot.shards`); the cross-guild queries touch only those,
    so several processes sharing one database never do the same guild's start-up repair or purge twice.
    """

    def __init__(self, db: Database, *, shards: ShardScope = ALL_SHARDS) -> None:
        self._db = db
        self._shards = shards

    async def _execute(self, sql: str, params: dict[str, Any]) -> int:
        """One write statement in its own transaction; returns the number of rows it changed."""
        return await self._db.execute(sql, params)

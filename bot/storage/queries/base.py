"""What every query area shares: the database handle, one-statement writes, row → dataclass mapping."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bot import timezones
from bot.shards import ALL_SHARDS, ShardScope
from bot.storage.db import Database, Row, Transaction
from bot.storage.models import SessionRow, SessionSummaryRow, TurnRow, from_epoch

Timestamp = datetime | float
MAX_PAGE = 500


def current_time() -> float:
    return time.time()


def day_start(at: float, time_zone: str | None = None) -> float:
    """The start of the day `at` falls in (midnight in the server's time zone, UTC when None): where daily minutes
    and the daily budget reset."""
    return timezones.day_start(from_epoch(at), time_zone).timestamp()


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


def turn_row(row: Row, speaker_ids: tuple[int, ...] = ()) -> TurnRow:
    return TurnRow(
        id=row["id"], session_id=row["session_id"], guild_id=row["guild_id"], role=row["role"],
        speaker_id=speaker_ids[0] if speaker_ids else None, speaker_name=row["speaker_name"], text=row["text"],
        started_at=from_epoch(row["started_at"]), ended_at=from_epoch(row["ended_at"]),
        interrupted=bool(row["interrupted"]), flag_reason=row["flag_reason"], speaker_ids=speaker_ids,
    )


def in_list(name: str, values: Sequence[int]) -> tuple[str, dict[str, int]]:
    """`:name0, :name1, …` and their parameters, for `x IN (…)` with a list (portable to both backends)."""
    params = {f"{name}{i}": value for i, value in enumerate(values)}
    return ", ".join(f":{key}" for key in params), params


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

    async def _turns_with_speakers(self, guild_id: int, rows: Sequence[Row],
                                   db: Database | Transaction | None = None) -> list[TurnRow]:
        """`TurnRow`s for turn rows of one guild, each with every member who spoke or typed in it."""
        speakers: dict[int, list[int]] = {}
        ids = [row["id"] for row in rows]
        for start in range(0, len(ids), MAX_PAGE):
            placeholders, params = in_list("turn", ids[start:start + MAX_PAGE])
            for found in await (db or self._db).fetch_all(
                    f"SELECT turn_id, member_id FROM turn_speakers WHERE guild_id = :guild_id "  # noqa: S608
                    f"AND turn_id IN ({placeholders}) ORDER BY turn_id, ordinal", {"guild_id": guild_id, **params}):
                speakers.setdefault(found["turn_id"], []).append(found["member_id"])
        return [turn_row(row, tuple(speakers.get(row["id"], ()))) for row in rows]

    async def _execute(self, sql: str, params: dict[str, Any]) -> int:
        """One write statement in its own transaction; returns the number of rows it changed."""
        return await self._db.execute(sql, params)

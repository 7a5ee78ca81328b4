"""Sessions: opening and closing a conversation's row, listing and searching them, minutes used, summaries."""

from __future__ import annotations

import logging

from bot.storage.models import (
    SUMMARY_STATUSES,
    SessionRow,
    SessionSummaryRow,
    SummaryStatus,
    storable_text,
    to_epoch,
)
from bot.storage.queries.base import (
    MAX_PAGE,
    Queries,
    Timestamp,
    current_time,
    day_start,
    like_escape,
    page_size,
    session_row,
    summary_row,
)

log = logging.getLogger("bot.storage.repository")


class SessionQueries(Queries):
    async def start_session(
        self, guild_id: int, channel_id: int, starter_id: int, starter_name: str, level: str, age: int,
        *, started_at: Timestamp | None = None, language: str | None = None,
    ) -> int:
        """Record a new conversation (`language`: the BCP-47 code the tutor speaks) and return its id."""
        if not level.strip():
            raise ValueError("level must not be empty")
        row = await self._db.write(lambda tx: tx.fetch_one(
            "INSERT INTO sessions (guild_id, channel_id, starter_id, starter_name, level, age, started_at, language) "
            "VALUES (:guild_id, :channel_id, :starter_id, :starter_name, :level, :age, :started_at, :language) "
            "RETURNING id",
            {"guild_id": guild_id, "channel_id": channel_id, "starter_id": starter_id,
             "starter_name": storable_text(starter_name), "level": level, "age": age, "language": language,
             "started_at": current_time() if started_at is None else to_epoch(started_at)},
        ))
        session_id = int(row["id"])
        log.info("storage.session_started", extra={"guild_id": guild_id, "session_id": session_id})
        return session_id

    async def end_session(
        self, guild_id: int, session_id: int, reason: str, *, ended_at: Timestamp | None = None,
    ) -> bool:
        """Close a running session; False if it is unknown here or already ended. The resume handle is dropped."""
        count = await self._execute(
            "UPDATE sessions SET ended_at = GREATEST(started_at, :ended_at), end_reason = :reason, "
            "resumption_handle = NULL WHERE guild_id = :guild_id AND id = :session_id AND ended_at IS NULL",
            {"guild_id": guild_id, "session_id": session_id, "reason": reason,
             "ended_at": current_time() if ended_at is None else to_epoch(ended_at)},
        )
        return count == 1

    async def set_resumption_handle(self, guild_id: int, session_id: int, handle: str | None) -> bool:
        """Keep the newest Live resumption handle of a running session."""
        count = await self._execute(
            "UPDATE sessions SET resumption_handle = :handle "
            "WHERE guild_id = :guild_id AND id = :session_id AND ended_at IS NULL",
            {"guild_id": guild_id, "session_id": session_id, "handle": handle},
        )
        return count == 1

    async def get_session(self, guild_id: int, session_id: int) -> SessionRow | None:
        """The session, or None when it does not exist in this guild."""
        row = await self._db.fetch_one(
            "SELECT s.* FROM sessions s WHERE s.guild_id = :guild_id AND s.id = :session_id",
            {"guild_id": guild_id, "session_id": session_id},
        )
        return None if row is None else session_row(row)

    async def list_sessions(
        self, guild_id: int, *, member_id: int | None = None, level: str | None = None,
        since: Timestamp | None = None, limit: int = 25, offset: int = 0,
    ) -> list[SessionSummaryRow]:
        """Newest first, with duration and turn counts. `member_id`: sessions they started, spoke or typed in."""
        at = current_time()
        rows = await self._db.fetch_all(
            "SELECT s.*, "
            "(SELECT COUNT(*) FROM turns t WHERE t.guild_id = s.guild_id AND t.session_id = s.id) AS turn_count, "
            "(SELECT COUNT(*) FROM turns t WHERE t.guild_id = s.guild_id AND t.session_id = s.id "
            " AND t.flag_reason IS NOT NULL) AS flagged_count, "
            "(SELECT COALESCE(SUM(u.cost_usd), 0) FROM turn_usage u WHERE u.guild_id = s.guild_id "
            " AND u.session_id = s.id) AS cost_usd, "
            "(SELECT COALESCE(SUM(u.total_tokens), 0) FROM turn_usage u WHERE u.guild_id = s.guild_id "
            " AND u.session_id = s.id) AS total_tokens "
            "FROM sessions s WHERE s.guild_id = :guild_id "
            "AND (s.starter_id = :member_id OR :member_id IS NULL OR EXISTS (SELECT 1 FROM turns m "
            " JOIN turn_speakers ms ON ms.turn_id = m.id AND ms.guild_id = m.guild_id "
            " WHERE m.guild_id = s.guild_id AND m.session_id = s.id AND ms.member_id = :member_id)) "
            "AND (s.level = :level OR :level IS NULL) AND (s.started_at >= :since OR :since IS NULL) "
            "ORDER BY s.started_at DESC, s.id DESC LIMIT :limit OFFSET :offset",
            {"guild_id": guild_id, "member_id": member_id, "level": level,
             "since": None if since is None else to_epoch(since), "limit": page_size(limit),
             "offset": max(0, offset)},
        )
        return [summary_row(row, at) for row in rows]

    async def search_sessions(self, guild_id: int, query: str, limit: int = 25) -> list[SessionRow]:
        """Autocomplete: this guild's sessions whose id starts with, or starter/level contains, `query`."""
        text = like_escape(query.strip().lstrip("#"))
        rows = await self._db.fetch_all(
            "SELECT s.* FROM sessions s WHERE s.guild_id = :guild_id AND ("
            "CAST(s.id AS TEXT) LIKE :prefix ESCAPE '\\' OR LOWER(s.starter_name) LIKE LOWER(:infix) ESCAPE '\\' "
            "OR LOWER(s.level) LIKE LOWER(:infix) ESCAPE '\\') ORDER BY s.started_at DESC, s.id DESC LIMIT :limit",
            {"guild_id": guild_id, "prefix": f"{text}%", "infix": f"%{text}%", "limit": page_size(limit)},
        )
        return [session_row(row) for row in rows]

    async def minutes_used_today(self, guild_id: int, now: Timestamp | None = None, *,
                                 time_zone: str | None = None) -> float:
        """Minutes of conversation since midnight in the server's time zone (UTC when None); a session that began
        yesterday counts from midnight."""
        at = current_time() if now is None else to_epoch(now)
        row = await self._db.fetch_one(
            "SELECT COALESCE(SUM(GREATEST(0, LEAST(COALESCE(ended_at, :now), :now) "
            "- GREATEST(started_at, :day_start))), 0) "
            "FROM sessions WHERE guild_id = :guild_id AND started_at < :now "
            "AND (ended_at IS NULL OR ended_at > :day_start)",
            {"guild_id": guild_id, "now": at, "day_start": day_start(at, time_zone)},
        )
        return float(row[0]) / 60.0 if row else 0.0

    async def close_dangling_sessions(self, reason: str = "bot restarted") -> int:
        """Start-up after a crash: end every unfinished session of this process's shards at its last turn (or
        its start). Sessions of other shards belong to other processes, which may be running them right now."""
        mine, shard_params = self._shards.sql_filter("guild_id")
        count = await self._execute(
            "UPDATE sessions SET end_reason = :reason, resumption_handle = NULL, "  # noqa: S608
            "ended_at = GREATEST(started_at, COALESCE((SELECT MAX(t.ended_at) FROM turns t "
            "WHERE t.guild_id = sessions.guild_id AND t.session_id = sessions.id), started_at)) "
            f"WHERE ended_at IS NULL AND {mine}",
            {"reason": reason, **shard_params},
        )
        if count:
            log.warning("storage.dangling_sessions_closed", extra={"count": count})
        return count

    async def pending_summaries(self, limit: int = 50) -> list[tuple[int, int]]:
        """(guild_id, session_id) of ended sessions of this process's shards whose summary was never made."""
        mine, shard_params = self._shards.sql_filter("guild_id")
        rows = await self._db.fetch_all(
            "SELECT guild_id, id FROM sessions WHERE summary_status = 'pending' "  # noqa: S608
            f"AND ended_at IS NOT NULL AND {mine} ORDER BY ended_at DESC LIMIT :limit",
            {"limit": max(1, min(limit, MAX_PAGE)), **shard_params})
        return [(row["guild_id"], row["id"]) for row in rows]

    async def set_summary(self, guild_id: int, session_id: int, summary: str | None, status: SummaryStatus, *,
                          made_from: int | None = None) -> bool:
        """Store the after-session summary (or why there is none); False if the session is not in this guild.

        `made_from`: how many turns the summary was made from. It is stored only if the session still has that
        many: a moderator's erasure while the model was writing removed turns, and a summary of words that are
        gone must not be kept (False: make it again from what is left)."""
        if status not in SUMMARY_STATUSES:
            raise ValueError(f"summary status must be one of {sorted(SUMMARY_STATUSES)}, got {status!r}")
        if status == "ok" and not (summary and summary.strip()):
            raise ValueError("status 'ok' needs a non-empty summary")
        count = await self._execute(
            "UPDATE sessions SET summary = :summary, summary_status = :status "
            "WHERE guild_id = :guild_id AND id = :session_id AND (CAST(:made_from AS BIGINT) IS NULL OR "
            "(SELECT COUNT(*) FROM turns t WHERE t.guild_id = :guild_id AND t.session_id = :session_id) = :made_from)",
            {"guild_id": guild_id, "session_id": session_id, "status": status, "made_from": made_from,
             "summary": None if summary is None else storable_text(summary)},
        )
        return count == 1


"""Every query the bot runs. Each one that reads, changes or deletes sessions or turns is scoped by `guild_id`.

Three deliberate exceptions run across guilds and are listed in `CROSS_GUILD_QUERIES` (tests hold them to
it): start-up clean-up after a crash, finding which guilds have something to purge, and finding summaries a
restart cut off. They only touch rows by their own guild's rules; none returns transcript text.

Times: parameters accept an aware `datetime` or UTC unix seconds; results carry aware UTC datetimes; the
file stores UTC unix seconds. Daily minutes are counted per UTC day.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from bot.storage.db import Database, IntegrityError, Row, Transaction
from bot.storage.models import (
    DEFAULT_RETENTION_DAYS,
    ROLES,
    SUMMARY_STATUSES,
    CustomLevel,
    GuildSettings,
    SessionRow,
    SessionSummaryRow,
    SummaryStatus,
    TurnRow,
    from_epoch,
    to_epoch,
)

log = logging.getLogger(__name__)

Timestamp = datetime | float

# Methods whose SQL deliberately spans guilds, with the reason. Nothing else may.
CROSS_GUILD_QUERIES: dict[str, str] = {
    "close_dangling_sessions": "start-up repair: every guild's unfinished sessions are ended the same way",
    "_guilds_with_ended_sessions": "finds which guilds to purge; each purge then runs scoped to its guild",
    "pending_summaries": "start-up retry of summaries a restart cut off; returns ids only, no transcript text",
}

SETTINGS_RANGES: dict[str, tuple[int, int]] = {
    "daily_minutes": (1, 1440),
    "max_session_minutes": (1, 240),
    "retention_days": (1, 365),
}
SETTINGS_IDS: frozenset[str] = frozenset({"moderator_role_id", "alerts_channel_id", "starter_role_id"})
MAX_PAGE = 500


def _now() -> float:
    return time.time()


def _page_size(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    return limit


def _session(row: Row) -> SessionRow:
    return SessionRow(
        id=row["id"], guild_id=row["guild_id"], channel_id=row["channel_id"], starter_id=row["starter_id"],
        starter_name=row["starter_name"], level=row["level"], age=row["age"],
        started_at=from_epoch(row["started_at"]),
        ended_at=None if row["ended_at"] is None else from_epoch(row["ended_at"]),
        end_reason=row["end_reason"], resumption_handle=row["resumption_handle"], summary=row["summary"],
        summary_status=row["summary_status"],
    )


def _turn(row: Row) -> TurnRow:
    return TurnRow(
        id=row["id"], session_id=row["session_id"], guild_id=row["guild_id"], role=row["role"],
        speaker_id=row["speaker_id"], speaker_name=row["speaker_name"], text=row["text"],
        started_at=from_epoch(row["started_at"]), ended_at=from_epoch(row["ended_at"]),
        interrupted=bool(row["interrupted"]), flag_reason=row["flag_reason"],
    )


def _summary(row: Row, now: float) -> SessionSummaryRow:
    end = row["ended_at"] if row["ended_at"] is not None else max(now, row["started_at"])
    return SessionSummaryRow(
        id=row["id"], guild_id=row["guild_id"], channel_id=row["channel_id"], starter_id=row["starter_id"],
        starter_name=row["starter_name"], level=row["level"], age=row["age"],
        started_at=from_epoch(row["started_at"]),
        ended_at=None if row["ended_at"] is None else from_epoch(row["ended_at"]),
        end_reason=row["end_reason"], summary_status=row["summary_status"],
        duration=timedelta(seconds=end - row["started_at"]),
        turn_count=row["turn_count"], flagged_count=row["flagged_count"],
    )


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Repository:
    """Async queries over one `Database`; returns frozen dataclasses from `bot.storage.models`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def _execute(self, sql: str, params: dict[str, Any]) -> int:
        """One write statement in its own transaction; returns the number of rows it changed."""
        return await self._db.execute(sql, params)

    # ---------------------------------------------------------------- sessions

    async def start_session(
        self, guild_id: int, channel_id: int, starter_id: int, starter_name: str, level: str, age: int,
        *, started_at: Timestamp | None = None,
    ) -> int:
        """Record a new conversation and return its id."""
        if not level.strip():
            raise ValueError("level must not be empty")
        row = await self._db.write(lambda tx: tx.fetch_one(
            "INSERT INTO sessions (guild_id, channel_id, starter_id, starter_name, level, age, started_at) "
            "VALUES (:guild_id, :channel_id, :starter_id, :starter_name, :level, :age, :started_at) RETURNING id",
            {"guild_id": guild_id, "channel_id": channel_id, "starter_id": starter_id,
             "starter_name": starter_name, "level": level, "age": age,
             "started_at": _now() if started_at is None else to_epoch(started_at)},
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
             "ended_at": _now() if ended_at is None else to_epoch(ended_at)},
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
        return None if row is None else _session(row)

    async def list_sessions(
        self, guild_id: int, *, member_id: int | None = None, level: str | None = None,
        since: Timestamp | None = None, limit: int = 25, offset: int = 0,
    ) -> list[SessionSummaryRow]:
        """Newest first, with duration and turn counts. `member_id`: sessions they started or spoke in."""
        now = _now()
        rows = await self._db.fetch_all(
            "SELECT s.*, "
            "(SELECT COUNT(*) FROM turns t WHERE t.guild_id = s.guild_id AND t.session_id = s.id) AS turn_count, "
            "(SELECT COUNT(*) FROM turns t WHERE t.guild_id = s.guild_id AND t.session_id = s.id "
            " AND t.flag_reason IS NOT NULL) AS flagged_count "
            "FROM sessions s WHERE s.guild_id = :guild_id "
            "AND (s.starter_id = :member_id OR :member_id IS NULL OR EXISTS (SELECT 1 FROM turns m "
            " WHERE m.guild_id = s.guild_id AND m.session_id = s.id AND m.speaker_id = :member_id)) "
            "AND (s.level = :level OR :level IS NULL) AND (s.started_at >= :since OR :since IS NULL) "
            "ORDER BY s.started_at DESC, s.id DESC LIMIT :limit OFFSET :offset",
            {"guild_id": guild_id, "member_id": member_id, "level": level,
             "since": None if since is None else to_epoch(since), "limit": _page_size(limit),
             "offset": max(0, offset)},
        )
        return [_summary(row, now) for row in rows]

    async def search_sessions(self, guild_id: int, query: str, limit: int = 25) -> list[SessionRow]:
        """Autocomplete: this guild's sessions whose id starts with, or starter/level contains, `query`."""
        text = _like_escape(query.strip().lstrip("#"))
        rows = await self._db.fetch_all(
            "SELECT s.* FROM sessions s WHERE s.guild_id = :guild_id AND ("
            "CAST(s.id AS TEXT) LIKE :prefix ESCAPE '\\' OR LOWER(s.starter_name) LIKE LOWER(:infix) ESCAPE '\\' "
            "OR LOWER(s.level) LIKE LOWER(:infix) ESCAPE '\\') ORDER BY s.started_at DESC, s.id DESC LIMIT :limit",
            {"guild_id": guild_id, "prefix": f"{text}%", "infix": f"%{text}%", "limit": _page_size(limit)},
        )
        return [_session(row) for row in rows]

    async def minutes_used_today(self, guild_id: int, now: Timestamp | None = None) -> float:
        """Minutes of conversation since UTC midnight; a session that began yesterday counts from midnight."""
        at = _now() if now is None else to_epoch(now)
        day_start = from_epoch(at).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        row = await self._db.fetch_one(
            "SELECT COALESCE(SUM(GREATEST(0, LEAST(COALESCE(ended_at, :now), :now) "
            "- GREATEST(started_at, :day_start))), 0) "
            "FROM sessions WHERE guild_id = :guild_id AND started_at < :now "
            "AND (ended_at IS NULL OR ended_at > :day_start)",
            {"guild_id": guild_id, "now": at, "day_start": day_start},
        )
        return float(row[0]) / 60.0 if row else 0.0

    async def close_dangling_sessions(self, reason: str = "bot restarted") -> int:
        """Start-up after a crash: end every unfinished session at its last turn (or its start)."""
        count = await self._execute(
            "UPDATE sessions SET end_reason = :reason, resumption_handle = NULL, ended_at = GREATEST(started_at, "
            "COALESCE((SELECT MAX(t.ended_at) FROM turns t WHERE t.guild_id = sessions.guild_id "
            "AND t.session_id = sessions.id), started_at)) WHERE ended_at IS NULL",
            {"reason": reason},
        )
        if count:
            log.warning("storage.dangling_sessions_closed", extra={"count": count})
        return count

    async def pending_summaries(self, limit: int = 50) -> list[tuple[int, int]]:
        """(guild_id, session_id) of ended sessions whose summary was never made (the bot stopped first)."""
        rows = await self._db.fetch_all(
            "SELECT guild_id, id FROM sessions WHERE summary_status = 'pending' AND ended_at IS NOT NULL "
            "ORDER BY ended_at DESC LIMIT :limit", {"limit": max(1, min(limit, MAX_PAGE))})
        return [(row["guild_id"], row["id"]) for row in rows]

    async def set_summary(self, guild_id: int, session_id: int, summary: str | None, status: SummaryStatus) -> bool:
        """Store the after-session summary (or why there is none); False if the session is not in this guild."""
        if status not in SUMMARY_STATUSES:
            raise ValueError(f"summary status must be one of {sorted(SUMMARY_STATUSES)}, got {status!r}")
        if status == "ok" and not (summary and summary.strip()):
            raise ValueError("status 'ok' needs a non-empty summary")
        count = await self._execute(
            "UPDATE sessions SET summary = :summary, summary_status = :status "
            "WHERE guild_id = :guild_id AND id = :session_id",
            {"guild_id": guild_id, "session_id": session_id, "summary": summary, "status": status},
        )
        return count == 1

    # ------------------------------------------------------------------- turns

    async def add_turn(
        self, guild_id: int, session_id: int, role: str, text: str, started_at: Timestamp, ended_at: Timestamp,
        *, speaker_id: int | None = None, speaker_name: str | None = None, interrupted: bool = False,
        flag_reason: str | None = None,
    ) -> int:
        """Commit one finished turn now (a crash loses at most the turn in progress); returns its id.

        Raises LookupError if the session is not in this guild (e.g. deleted by a moderator meanwhile).
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}, got {role!r}")
        start, end = to_epoch(started_at), to_epoch(ended_at)
        if end < start:
            raise ValueError("a turn cannot end before it starts")
        params = {"guild_id": guild_id, "session_id": session_id, "role": role, "speaker_id": speaker_id,
                  "speaker_name": speaker_name, "text": text, "started_at": start, "ended_at": end,
                  "interrupted": int(interrupted), "flag_reason": flag_reason}

        async def work(tx: Transaction) -> int:
            if await tx.fetch_one(
                "SELECT 1 FROM sessions WHERE guild_id = :guild_id AND id = :session_id", params,
            ) is None:
                raise LookupError(f"no session {session_id} in guild {guild_id}")
            row = await tx.fetch_one(
                "INSERT INTO turns (session_id, guild_id, role, speaker_id, speaker_name, text, started_at, "
                "ended_at, interrupted, flag_reason) VALUES (:session_id, :guild_id, :role, :speaker_id, "
                ":speaker_name, :text, :started_at, :ended_at, :interrupted, :flag_reason) RETURNING id", params,
            )
            return int(row["id"])

        return await self._db.write(work)

    async def get_turns(self, guild_id: int, session_id: int) -> list[TurnRow]:
        """A session's transcript in spoken order; empty if the session is not in this guild."""
        rows = await self._db.fetch_all(
            "SELECT t.* FROM turns t WHERE t.guild_id = :guild_id AND t.session_id = :session_id "
            "ORDER BY t.started_at, t.id",
            {"guild_id": guild_id, "session_id": session_id},
        )
        return [_turn(row) for row in rows]

    async def recent_turns_for_level(
        self, guild_id: int, level: str, limit: int = 20, *, exclude_session_id: int | None = None,
    ) -> list[TurnRow]:
        """The last child/tutor turns of this guild's sessions on `level`, oldest first, to seed Live history.

        Flagged turns and system notes are left out: an unsafe exchange must never be replayed to the model.
        """
        rows = await self._db.fetch_all(
            "SELECT t.* FROM turns t JOIN sessions s ON s.id = t.session_id AND s.guild_id = t.guild_id "
            "WHERE t.guild_id = :guild_id AND s.level = :level AND t.role IN ('child', 'tutor') "
            "AND t.flag_reason IS NULL AND (t.session_id != :exclude OR :exclude IS NULL) "
            "ORDER BY t.started_at DESC, t.id DESC LIMIT :limit",
            {"guild_id": guild_id, "level": level, "exclude": exclude_session_id, "limit": _page_size(limit)},
        )
        return [_turn(row) for row in reversed(rows)]

    async def flagged_turns(self, guild_id: int, since: Timestamp | None = None, limit: int = 25) -> list[TurnRow]:
        """Flagged turns of this guild, newest first."""
        rows = await self._db.fetch_all(
            "SELECT t.* FROM turns t WHERE t.guild_id = :guild_id AND t.flag_reason IS NOT NULL "
            "AND (t.started_at >= :since OR :since IS NULL) ORDER BY t.started_at DESC, t.id DESC LIMIT :limit",
            {"guild_id": guild_id, "since": None if since is None else to_epoch(since), "limit": _page_size(limit)},
        )
        return [_turn(row) for row in rows]

    async def flag_turn(self, guild_id: int, turn_id: int, reason: str) -> bool:
        """Mark a turn for moderators; False if the turn is not in this guild."""
        if not reason.strip():
            raise ValueError("a flag needs a reason")
        count = await self._execute(
            "UPDATE turns SET flag_reason = :reason WHERE guild_id = :guild_id AND id = :turn_id",
            {"guild_id": guild_id, "turn_id": turn_id, "reason": reason},
        )
        return count == 1

    # ------------------------------------------------------------------ delete

    async def delete_session(self, guild_id: int, session_id: int) -> int:
        """Delete a session and its transcript; returns the number of turns deleted (0 if not in this guild)."""
        sessions, turns = await self._delete_where(
            guild_id, "s.id = :session_id", {"session_id": session_id}, extra_turns="FALSE")
        if sessions:
            log.info("storage.session_deleted", extra={"guild_id": guild_id, "session_id": session_id,
                                                       "turns": turns})
        return turns

    async def delete_member_data(self, guild_id: int, member_id: int) -> tuple[int, int]:
        """Forget a member in this guild: the sessions they started (whole transcripts) and every turn they
        spoke in other sessions. The tutor's replies in those other sessions stay. Returns (sessions, turns)."""
        sessions, turns = await self._delete_where(
            guild_id, "s.starter_id = :member_id", {"member_id": member_id},
            extra_turns="t.speaker_id = :member_id")
        log.info("storage.member_deleted", extra={"guild_id": guild_id, "member_id": member_id,
                                                  "sessions": sessions, "turns": turns})
        return sessions, turns

    async def purge_older_than(self, guild_id: int, days: int, *, now: Timestamp | None = None) -> tuple[int, int]:
        """Delete this guild's sessions that ended more than `days` ago; running ones are kept."""
        if days < 0:
            raise ValueError("days must not be negative")
        cutoff = (_now() if now is None else to_epoch(now)) - days * 86400
        return await self._delete_where(
            guild_id, "s.ended_at IS NOT NULL AND s.ended_at < :cutoff", {"cutoff": cutoff}, extra_turns="FALSE")

    async def purge_all_expired(self, now: Timestamp | None = None) -> dict[int, tuple[int, int]]:
        """Apply each guild's `retention_days` (30 without settings); returns only guilds that lost something."""
        at = _now() if now is None else to_epoch(now)
        purged: dict[int, tuple[int, int]] = {}
        for guild_id, retention_days in await self._guilds_with_ended_sessions():
            counts = await self.purge_older_than(guild_id, retention_days, now=at)
            if counts != (0, 0):
                purged[guild_id] = counts
                log.info("storage.purged", extra={"guild_id": guild_id, "sessions": counts[0], "turns": counts[1]})
        return purged

    async def _guilds_with_ended_sessions(self) -> list[tuple[int, int]]:
        rows = await self._db.fetch_all(
            "SELECT g.guild_id, COALESCE(gs.retention_days, :default_days) AS retention_days "
            "FROM (SELECT DISTINCT guild_id FROM sessions WHERE ended_at IS NOT NULL) g "
            "LEFT JOIN guild_settings gs ON gs.guild_id = g.guild_id ORDER BY g.guild_id",
            {"default_days": DEFAULT_RETENTION_DAYS},
        )
        return [(row["guild_id"], row["retention_days"]) for row in rows]

    async def _delete_where(
        self, guild_id: int, session_filter: str, params: dict[str, Any], *, extra_turns: str,
    ) -> tuple[int, int]:
        """Delete matching sessions of one guild with all their turns, plus turns matching `extra_turns`.

        Turns are deleted explicitly (to count them); ON DELETE CASCADE is the safety net.
        `session_filter` and `extra_turns` are SQL fragments written in this module, never user input.
        """
        bound = {**params, "guild_id": guild_id}
        sessions_sql = f"SELECT s.id FROM sessions s WHERE s.guild_id = :guild_id AND {session_filter}"  # noqa: S608

        async def work(tx: Transaction) -> tuple[int, int]:
            turns = await tx.execute(
                f"DELETE FROM turns AS t WHERE t.guild_id = :guild_id "  # noqa: S608
                f"AND (t.session_id IN ({sessions_sql}) OR {extra_turns})", bound,
            )
            sessions = await tx.execute(
                f"DELETE FROM sessions WHERE guild_id = :guild_id AND id IN ({sessions_sql})", bound,  # noqa: S608
            )
            return sessions, turns

        return await self._db.write(work)

    # ---------------------------------------------------------------- settings

    async def get_settings(self, guild_id: int) -> GuildSettings:
        """The guild's settings, or the defaults if it never saved any."""
        row = await self._db.fetch_one("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
        if row is None:
            return GuildSettings(guild_id=guild_id)
        return GuildSettings(
            guild_id=row["guild_id"], moderator_role_id=row["moderator_role_id"],
            alerts_channel_id=row["alerts_channel_id"], starter_role_id=row["starter_role_id"],
            daily_minutes=row["daily_minutes"], max_session_minutes=row["max_session_minutes"],
            retention_days=row["retention_days"], updated_at=from_epoch(row["updated_at"]),
        )

    async def update_settings(self, guild_id: int, **fields: int | None) -> GuildSettings:
        """Change some settings (ids may be None to clear); ValueError, with nothing changed, on a bad field."""
        if not fields:
            raise ValueError("no settings to change")
        for name, value in fields.items():
            _validate_setting(name, value)
        columns = sorted(fields)  # only names from the allow-list reach the SQL text
        await self._execute(
            f"INSERT INTO guild_settings (guild_id, {', '.join(columns)}, updated_at) "  # noqa: S608
            f"VALUES (:guild_id, {', '.join(':' + c for c in columns)}, :updated_at) "
            f"ON CONFLICT (guild_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns)}, "
            "updated_at = excluded.updated_at",
            {**fields, "guild_id": guild_id, "updated_at": _now()},
        )
        log.info("storage.settings_updated", extra={"guild_id": guild_id, "fields": ",".join(columns)})
        return await self.get_settings(guild_id)

    # ----------------------------------------------------------- custom levels

    async def add_custom_level(self, guild_id: int, name: str, description: str, created_by: int) -> bool:
        """Add a level; False if this guild already has one with that name (case-insensitive)."""
        if not name.strip():
            raise ValueError("a level needs a name")
        try:
            await self._execute(
                "INSERT INTO custom_levels (guild_id, name, description, created_by, created_at) "
                "VALUES (:guild_id, :name, :description, :created_by, :created_at)",
                {"guild_id": guild_id, "name": name.strip(), "description": description.strip(),
                 "created_by": created_by, "created_at": _now()},
            )
        except IntegrityError:
            return False
        return True

    async def remove_custom_level(self, guild_id: int, name: str) -> bool:
        """Remove a level by name (case-insensitive); False if there was none."""
        count = await self._execute(
            "DELETE FROM custom_levels WHERE guild_id = :guild_id AND name = :name",
            {"guild_id": guild_id, "name": name.strip()},
        )
        return count == 1

    async def list_custom_levels(self, guild_id: int) -> list[CustomLevel]:
        """This guild's custom levels, by name."""
        rows = await self._db.fetch_all(
            "SELECT guild_id, name, description, created_by, created_at FROM custom_levels "
            "WHERE guild_id = ? ORDER BY name", (guild_id,),
        )
        return [CustomLevel(guild_id=r["guild_id"], name=r["name"], description=r["description"],
                            created_by=r["created_by"], created_at=from_epoch(r["created_at"])) for r in rows]


def _validate_setting(name: str, value: object) -> None:
    if name in SETTINGS_RANGES:
        low, high = SETTINGS_RANGES[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    elif name in SETTINGS_IDS:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name} must be a Discord id or None, got {value!r}")
    else:
        raise ValueError(f"unknown setting {name!r}; allowed: {sorted(SETTINGS_RANGES.keys() | SETTINGS_IDS)}")


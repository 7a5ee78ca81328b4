"""Moderation and erasure: flags, deleting a session or a member's words, and the retention purge."""

from __future__ import annotations

import logging
from typing import Any

from bot.storage.db import Transaction
from bot.storage.models import DEFAULT_RETENTION_DAYS, TurnRow, to_epoch
from bot.storage.queries.base import Queries, Timestamp, current_time, page_size, turn_row

log = logging.getLogger("bot.storage.repository")


class ModerationQueries(Queries):
    async def flagged_turns(self, guild_id: int, since: Timestamp | None = None, limit: int = 25) -> list[TurnRow]:
        """Flagged turns of this guild, newest first."""
        rows = await self._db.fetch_all(
            "SELECT t.* FROM turns t WHERE t.guild_id = :guild_id AND t.flag_reason IS NOT NULL "
            "AND (t.started_at >= :since OR :since IS NULL) ORDER BY t.started_at DESC, t.id DESC LIMIT :limit",
            {"guild_id": guild_id, "since": None if since is None else to_epoch(since), "limit": page_size(limit)},
        )
        return [turn_row(row) for row in rows]

    async def flag_turn(self, guild_id: int, turn_id: int, reason: str) -> bool:
        """Mark a turn for moderators; False if the turn is not in this guild."""
        if not reason.strip():
            raise ValueError("a flag needs a reason")
        count = await self._execute(
            "UPDATE turns SET flag_reason = :reason WHERE guild_id = :guild_id AND id = :turn_id",
            {"guild_id": guild_id, "turn_id": turn_id, "reason": reason},
        )
        return count == 1

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
        await self._execute("DELETE FROM member_names WHERE guild_id = :guild_id AND member_id = :member_id",
                            {"guild_id": guild_id, "member_id": member_id})  # the name they chose goes too
        log.info("storage.member_deleted", extra={"guild_id": guild_id, "member_id": member_id,
                                                  "sessions": sessions, "turns": turns})
        return sessions, turns

    async def purge_older_than(self, guild_id: int, days: int, *, now: Timestamp | None = None) -> tuple[int, int]:
        """Delete this guild's sessions that ended more than `days` ago; running ones are kept."""
        if days < 0:
            raise ValueError("days must not be negative")
        cutoff = (current_time() if now is None else to_epoch(now)) - days * 86400
        return await self._delete_where(
            guild_id, "s.ended_at IS NOT NULL AND s.ended_at < :cutoff", {"cutoff": cutoff}, extra_turns="FALSE")

    async def purge_all_expired(self, now: Timestamp | None = None) -> dict[int, tuple[int, int]]:
        """Apply each guild's `retention_days` (30 without settings); returns only guilds that lost something."""
        at = current_time() if now is None else to_epoch(now)
        purged: dict[int, tuple[int, int]] = {}
        for guild_id, retention_days in await self._guilds_with_ended_sessions():
            counts = await self.purge_older_than(guild_id, retention_days, now=at)
            if counts != (0, 0):
                purged[guild_id] = counts
                log.info("storage.purged", extra={"guild_id": guild_id, "sessions": counts[0], "turns": counts[1]})
        return purged

    async def _guilds_with_ended_sessions(self) -> list[tuple[int, int]]:
        """This process's shards' guilds that have ended sessions, with their retention (each purged once)."""
        mine, shard_params = self._shards.sql_filter("guild_id")
        rows = await self._db.fetch_all(
            "SELECT g.guild_id, COALESCE(gs.retention_days, :default_days) AS retention_days "  # noqa: S608
            f"FROM (SELECT DISTINCT guild_id FROM sessions WHERE ended_at IS NOT NULL AND {mine}) g "
            "LEFT JOIN guild_settings gs ON gs.guild_id = g.guild_id ORDER BY g.guild_id",
            {"default_days": DEFAULT_RETENTION_DAYS, **shard_params},
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

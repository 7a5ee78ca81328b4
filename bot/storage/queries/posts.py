"""The bot's own posts in an alerts channel that quote a session: a flagged excerpt, an alert about a child's
words, a summary. Erasing those words (a member, a session, the retention purge) marks the posts `stale` in
the same transaction (`mark_posts_stale`); the alerts cog deletes stale posts from Discord and forgets them."""

from __future__ import annotations

from collections.abc import Sequence

from bot.storage.db import Transaction
from bot.storage.models import POST_KINDS, AlertPostRow
from bot.storage.queries.base import Queries, current_time, in_list, page_size


class PostQueries(Queries):
    async def add_alert_post(self, guild_id: int, session_id: int, channel_id: int, message_id: int, kind: str,
                             *, turn_id: int | None = None, event_id: int | None = None) -> int:
        """Remember a post about a session (and the turn or event it quotes). A post whose session, turn or event
        was erased while it was being sent is stored stale at once, so it is deleted too."""
        if kind not in POST_KINDS:
            raise ValueError(f"kind must be one of {sorted(POST_KINDS)}, got {kind!r}")
        params = {"guild_id": guild_id, "session_id": session_id, "channel_id": channel_id,
                  "message_id": message_id, "kind": kind, "turn_id": turn_id, "event_id": event_id,
                  "posted_at": current_time()}
        row = await self._db.write(lambda tx: tx.fetch_one(
            "INSERT INTO alert_posts (guild_id, session_id, channel_id, message_id, kind, turn_id, event_id, "
            "posted_at, stale) VALUES (:guild_id, :session_id, :channel_id, :message_id, :kind, :turn_id, "
            ":event_id, :posted_at, CASE WHEN NOT EXISTS (SELECT 1 FROM sessions s WHERE s.guild_id = :guild_id "
            "AND s.id = :session_id) OR (CAST(:turn_id AS BIGINT) IS NOT NULL AND NOT EXISTS (SELECT 1 FROM turns t "
            "WHERE t.guild_id = :guild_id AND t.session_id = :session_id AND t.id = :turn_id)) "
            "OR (CAST(:event_id AS BIGINT) IS NOT NULL AND NOT EXISTS (SELECT 1 FROM session_events e "
            "WHERE e.guild_id = :guild_id AND e.session_id = :session_id AND e.id = :event_id)) THEN 1 ELSE 0 END) "
            "ON CONFLICT (channel_id, message_id) DO NOTHING RETURNING id", params))
        return 0 if row is None else int(row["id"])

    async def stale_alert_posts(self, guild_id: int, limit: int = 100, *, after: int = 0) -> list[AlertPostRow]:
        """Posts of this guild whose words were erased, oldest first (those after post id `after`): to delete
        from Discord."""
        rows = await self._db.fetch_all(
            "SELECT p.* FROM alert_posts p WHERE p.guild_id = :guild_id AND p.stale = 1 AND p.id > :after "
            "ORDER BY p.id LIMIT :limit", {"guild_id": guild_id, "after": after, "limit": page_size(limit)})
        return [AlertPostRow(id=r["id"], guild_id=r["guild_id"], channel_id=r["channel_id"],
                             message_id=r["message_id"], session_id=r["session_id"], kind=r["kind"]) for r in rows]

    async def forget_alert_posts(self, guild_id: int, post_ids: Sequence[int]) -> int:
        """These posts are gone from Discord: forget them."""
        if not post_ids:
            return 0
        placeholders, ids = in_list("post", post_ids)
        return await self._execute(
            f"DELETE FROM alert_posts WHERE guild_id = :guild_id AND id IN ({placeholders})",  # noqa: S608
            {"guild_id": guild_id, **ids})

    async def guilds_with_stale_posts(self) -> list[int]:
        """This process's shards' guilds that have posts to delete (at start-up and after each purge)."""
        mine, shard_params = self._shards.sql_filter("guild_id")
        rows = await self._db.fetch_all(
            f"SELECT DISTINCT guild_id FROM alert_posts WHERE stale = 1 AND {mine} ORDER BY guild_id",  # noqa: S608
            shard_params)
        return [row["guild_id"] for row in rows]


async def mark_posts_stale(tx: Transaction, params: dict[str, object], where: str) -> int:
    """Inside an erasing transaction: the posts of this guild matching `where` (SQL over `alert_posts p`, written
    in the storage modules, never user input) are to be deleted from Discord. Returns how many."""
    return await tx.execute(
        f"UPDATE alert_posts SET stale = 1 WHERE guild_id = :guild_id AND stale = 0 AND id IN "  # noqa: S608
        f"(SELECT p.id FROM alert_posts p WHERE p.guild_id = :guild_id AND ({where}))", params)

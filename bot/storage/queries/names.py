"""The name each kid chose for the tutor to use (a kid on a parent's account is not called by the parent's name)."""

from __future__ import annotations

import logging

from bot.storage.queries.base import Queries, current_time

log = logging.getLogger("bot.storage.repository")


class MemberNameQueries(Queries):
    async def set_member_name(self, guild_id: int, member_id: int, name: str, set_by: int) -> None:
        """Set (or replace) the name the tutor uses for this member in this guild."""
        if not name.strip():
            raise ValueError("a name cannot be empty")
        await self._execute(
            "INSERT INTO member_names (guild_id, member_id, name, set_by, updated_at) "
            "VALUES (:guild_id, :member_id, :name, :set_by, :updated_at) "
            "ON CONFLICT (guild_id, member_id) DO UPDATE SET name = excluded.name, set_by = excluded.set_by, "
            "updated_at = excluded.updated_at",
            {"guild_id": guild_id, "member_id": member_id, "name": name.strip(), "set_by": set_by,
             "updated_at": current_time()},
        )
        log.info("storage.member_name_set", extra={"guild_id": guild_id, "member_id": member_id, "set_by": set_by})

    async def clear_member_name(self, guild_id: int, member_id: int) -> bool:
        """Forget the chosen name; False if there was none."""
        count = await self._execute(
            "DELETE FROM member_names WHERE guild_id = :guild_id AND member_id = :member_id",
            {"guild_id": guild_id, "member_id": member_id},
        )
        return count == 1

    async def member_names(self, guild_id: int) -> dict[int, str]:
        """Every chosen name in this guild, by member id."""
        rows = await self._db.fetch_all(
            "SELECT member_id, name FROM member_names WHERE guild_id = :guild_id ORDER BY member_id",
            {"guild_id": guild_id},
        )
        return {row["member_id"]: row["name"] for row in rows}

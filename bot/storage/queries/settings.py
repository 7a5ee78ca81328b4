"""Per-guild settings (limits, roles, channels) and the guild's own custom levels."""

from __future__ import annotations

import logging

from bot import timezones
from bot.storage.db import IntegrityError
from bot.storage.models import CustomLevel, GuildSettings, from_epoch, storable_text
from bot.storage.queries.base import Queries, current_time

log = logging.getLogger("bot.storage.repository")

SETTINGS_RANGES: dict[str, tuple[int, int]] = {
    "daily_minutes": (1, 1440),
    "max_session_minutes": (1, 240),
    "retention_days": (1, 365),
    "daily_budget_cents": (10, 100_000),  # $0.10 to $1,000 a day
    "turn_pause_ms": (500, 3000),  # may also be None: the default by age
}
SETTINGS_NULLABLE: frozenset[str] = frozenset({"turn_pause_ms"})
SETTINGS_IDS: frozenset[str] = frozenset({"moderator_role_id", "alerts_channel_id", "starter_role_id"})
SETTINGS_ZONES: frozenset[str] = frozenset({"time_zone"})


class SettingsQueries(Queries):
    async def get_settings(self, guild_id: int) -> GuildSettings:
        """The guild's settings, or the defaults if it never saved any."""
        row = await self._db.fetch_one("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
        if row is None:
            return GuildSettings(guild_id=guild_id)
        return GuildSettings(
            guild_id=row["guild_id"], moderator_role_id=row["moderator_role_id"],
            alerts_channel_id=row["alerts_channel_id"], starter_role_id=row["starter_role_id"],
            daily_minutes=row["daily_minutes"], max_session_minutes=row["max_session_minutes"],
            retention_days=row["retention_days"], daily_budget_cents=row["daily_budget_cents"],
            turn_pause_ms=row["turn_pause_ms"],
            updated_at=from_epoch(row["updated_at"]), time_zone=row["time_zone"],
        )

    async def update_settings(self, guild_id: int, **fields: int | str | None) -> GuildSettings:
        """Change some settings (ids may be None to clear); ValueError, with nothing changed, on a bad field."""
        if not fields:
            raise ValueError("no settings to change")
        for name, value in fields.items():
            validate_setting(name, value)
        columns = sorted(fields)  # only names from the allow-list reach the SQL text
        await self._execute(
            f"INSERT INTO guild_settings (guild_id, {', '.join(columns)}, updated_at) "  # noqa: S608
            f"VALUES (:guild_id, {', '.join(':' + c for c in columns)}, :updated_at) "
            f"ON CONFLICT (guild_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns)}, "
            "updated_at = excluded.updated_at",
            {**fields, "guild_id": guild_id, "updated_at": current_time()},
        )
        log.info("storage.settings_updated", extra={"guild_id": guild_id, "fields": ",".join(columns)})
        return await self.get_settings(guild_id)

    async def add_custom_level(self, guild_id: int, name: str, description: str, created_by: int,
                               title: str | None = None) -> bool:
        """Add a level (`name` the slug, `title` what people read); False if this guild already has one with that
        name (case-insensitive)."""
        if not name.strip():
            raise ValueError("a level needs a name")
        try:
            await self._execute(
                "INSERT INTO custom_levels (guild_id, name, description, created_by, created_at, title) "
                "VALUES (:guild_id, :name, :description, :created_by, :created_at, :title)",
                {"guild_id": guild_id, "name": storable_text(name.strip()),
                 "description": storable_text(description.strip()), "created_by": created_by,
                 "created_at": current_time(),
                 "title": storable_text(title.strip()) if title and title.strip() else None},
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
            "SELECT guild_id, name, description, created_by, created_at, title FROM custom_levels "
            "WHERE guild_id = ? ORDER BY name", (guild_id,),
        )
        return [CustomLevel(guild_id=r["guild_id"], name=r["name"], description=r["description"],
                            created_by=r["created_by"], created_at=from_epoch(r["created_at"]), title=r["title"])
                for r in rows]


def validate_setting(name: str, value: object) -> None:
    if name in SETTINGS_NULLABLE and value is None:
        return
    if name in SETTINGS_RANGES:
        low, high = SETTINGS_RANGES[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    elif name in SETTINGS_IDS:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name} must be a Discord id or None, got {value!r}")
    elif name in SETTINGS_ZONES:
        if value is not None and not (isinstance(value, str) and timezones.is_known(value)):
            raise ValueError(f"{name} must be an IANA time zone name such as Europe/London, or None, got {value!r}")
    else:
        allowed = sorted(SETTINGS_RANGES.keys() | SETTINGS_IDS | SETTINGS_ZONES)
        raise ValueError(f"unknown setting {name!r}; allowed: {allowed}")

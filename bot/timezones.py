"""A server's time zone: when its "today" ends (the daily tutor minutes) and how times are shown to people.

Stored per server as an IANA name ("Europe/London"); no setting means UTC. The `tzdata` package backs
`zoneinfo` on machines without a system time-zone database. Pure functions, tested with fixed instants.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, time, timedelta, tzinfo
from functools import lru_cache

DEFAULT = "UTC"


@lru_cache(maxsize=1)
def known_zones() -> tuple[str, ...]:
    """Every IANA zone name this machine knows, sorted (about 600)."""
    return tuple(sorted(zoneinfo.available_timezones()))


def is_known(name: str) -> bool:
    return name in known_zones() or name == DEFAULT


def zone(name: str | None) -> tzinfo:
    """The zone for a stored name; None (or a name this machine no longer knows) is UTC."""
    if not name or name == DEFAULT:
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return UTC


def label(name: str | None) -> str:
    """How the zone is named to people: "Europe/London", or "UTC"."""
    return name if name and zone(name) is not UTC else DEFAULT


def day_start(at: datetime, name: str | None) -> datetime:
    """The aware instant today began in the zone (local midnight), for the moment `at`."""
    tz = zone(name)
    local = at.astimezone(tz)
    return datetime.combine(local.date(), time(0), tzinfo=tz)


def next_day_start(at: datetime, name: str | None) -> datetime:
    """When "today" ends in the zone: the next local midnight after `at`."""
    tz = zone(name)
    local = at.astimezone(tz)
    return datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=tz)


def resets(name: str | None) -> str:
    """"at midnight (Europe/London time)": when the daily tutor time starts again, for parents."""
    return f"at midnight ({label(name)} time)"


def show(moment: datetime, name: str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored UTC instant as local time with the zone named: "2026-11-25 16:00 Europe/London"."""
    return f"{moment.astimezone(zone(name)).strftime(fmt)} {label(name)}"


def matching(typed: str, limit: int = 25) -> list[str]:
    """Zone names containing what was typed (case-insensitive, spaces as underscores), UTC first when it fits."""
    needle = typed.strip().replace(" ", "_").casefold()
    found = [DEFAULT] if needle in DEFAULT.casefold() else []
    found += [name for name in known_zones() if needle in name.casefold() and name != DEFAULT]
    return found[:limit]

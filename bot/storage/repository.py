"""Every query the bot runs, as one `Repository`; the SQL lives in `bot.storage.queries`, one module per area.

Each query that reads, changes or deletes sessions, turns, their usage or their events is scoped by
`guild_id`. Four deliberate exceptions run across guilds and are listed in `CROSS_GUILD_QUERIES` (tests hold
them to it): start-up clean-up after a crash, finding which guilds have something to purge, finding summaries
a restart cut off, and finding which guilds have alert posts to delete. They only touch rows by their own
guild's rules; none returns transcript text. Each is limited to the guilds of this process's shards
(`Repository(db, shards=…)`, see `bot.shards`), so processes sharing a database never repeat one another's
work.

Times: parameters accept an aware `datetime` or UTC unix seconds; results carry aware UTC datetimes; the
file stores UTC unix seconds. Daily minutes are counted per day of the guild's time zone (UTC unless set).
"""

from __future__ import annotations

from bot.storage.queries.base import MAX_PAGE, Timestamp
from bot.storage.queries.moderation import ModerationQueries
from bot.storage.queries.names import MemberNameQueries
from bot.storage.queries.posts import PostQueries
from bot.storage.queries.sessions import SessionQueries
from bot.storage.queries.settings import SETTINGS_IDS, SETTINGS_RANGES, SettingsQueries
from bot.storage.queries.turns import TurnQueries
from bot.storage.queries.usage import UsageQueries

__all__ = ["CROSS_GUILD_QUERIES", "MAX_PAGE", "SETTINGS_IDS", "SETTINGS_RANGES", "Repository", "Timestamp"]

# Methods whose SQL deliberately spans guilds, with the reason. Nothing else may.
CROSS_GUILD_QUERIES: dict[str, str] = {
    "close_dangling_sessions": "start-up repair: every guild's unfinished sessions are ended the same way",
    "_guilds_with_ended_sessions": "finds which guilds to purge; each purge then runs scoped to its guild",
    "pending_summaries": "start-up retry of summaries a restart cut off; returns ids only, no transcript text",
    "guilds_with_stale_posts": "finds which guilds have alert posts to delete; each sweep then runs in its guild",
}


class Repository(SessionQueries, TurnQueries, ModerationQueries, SettingsQueries, UsageQueries, MemberNameQueries,
                 PostQueries):
    """Async queries over one `Database`; returns frozen dataclasses from `bot.storage.models`."""

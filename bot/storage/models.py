"""Frozen dataclasses the repository returns: callers never see `sqlite3.Row`.

Time convention: the database stores every instant as UTC unix seconds (`REAL`); these dataclasses carry
timezone-aware UTC `datetime`s. Daily minute caps are counted per day of the server's time zone (UTC
unless set, see `bot.timezones`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from bot.cost import TokenCounts

Role = Literal["child", "tutor", "system"]
SummaryStatus = Literal["pending", "ok", "unavailable"]

ROLES: frozenset[str] = frozenset({"child", "tutor", "system"})
SUMMARY_STATUSES: frozenset[str] = frozenset({"pending", "ok", "unavailable"})

DEFAULT_DAILY_MINUTES = 60
DEFAULT_MAX_SESSION_MINUTES = 30
DEFAULT_RETENTION_DAYS = 30
DEFAULT_DAILY_BUDGET_CENTS = 500  # $5.00 a day: the default 60 minutes cost about $4 with the default compression

EventKind = Literal["tool_call", "budget_stop"]
EVENT_KINDS: frozenset[str] = frozenset({"tool_call", "budget_stop"})


def to_epoch(moment: datetime | float) -> float:
    """UTC unix seconds for an aware datetime (or a float that already is one); naive datetimes are refused."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware (UTC) datetime")
        return moment.timestamp()
    return float(moment)


def storable_text(text: str) -> str:
    """`text` as every backend can store it: a lone surrogate (half an emoji from a cut transcript) or NUL
    (PostgreSQL refuses it) becomes U+FFFD, a surrogate pair the character it encodes. Repairing, never
    refusing: a turn must not be lost over one character."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").replace("\x00", "\ufffd")


def from_epoch(seconds: float) -> datetime:
    """The aware UTC datetime for stored unix seconds."""
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One tutor conversation, as stored."""

    id: int
    guild_id: int
    channel_id: int
    starter_id: int
    starter_name: str
    level: str
    age: int
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    resumption_handle: str | None
    summary: str | None
    summary_status: SummaryStatus
    language: str | None = None  # BCP-47 code the tutor spoke; None: English (sessions before languages existed)

    @property
    def is_running(self) -> bool:
        """True until `end_session` (or start-up clean-up) closes it."""
        return self.ended_at is None

    def duration(self, now: datetime | None = None) -> timedelta:
        """Length so far; a running session is measured up to `now`."""
        end = self.ended_at or now or datetime.now(UTC)
        return max(end - self.started_at, timedelta(0))


@dataclass(frozen=True, slots=True)
class SessionSummaryRow:
    """A session as listed for moderators: the row plus its counts."""

    id: int
    guild_id: int
    channel_id: int
    starter_id: int
    starter_name: str
    level: str
    age: int
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    summary_status: SummaryStatus
    duration: timedelta  # running sessions: up to the moment of the query
    turn_count: int
    flagged_count: int
    cost_usd: float = 0.0  # the sum of the session's usage snapshots
    total_tokens: int = 0

    @property
    def is_running(self) -> bool:
        """True while the conversation has not ended."""
        return self.ended_at is None


@dataclass(frozen=True, slots=True)
class TurnRow:
    """One utterance: a child's (speakers set), the tutor's, or a system note. `speaker_id` is the member
    credited first (`speaker_ids[0]`); `speaker_name` the label people read ("Ana, Ben")."""

    id: int
    session_id: int
    guild_id: int
    role: Role
    speaker_id: int | None
    speaker_name: str | None
    text: str
    started_at: datetime
    ended_at: datetime
    interrupted: bool
    flag_reason: str | None
    speaker_ids: tuple[int, ...] = ()  # every member who spoke or typed in it, the one credited first first

    @property
    def flagged(self) -> bool:
        """True when safety or a moderator marked this turn."""
        return self.flag_reason is not None


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What `delete_member_data` removed, for the moderator's confirmation."""

    sessions: int  # sessions the member started, deleted whole
    turns: int  # every turn deleted (theirs and shared ones, and those of the deleted sessions)
    labels: int  # speaker labels in turns that stay, with the member's name taken out
    summaries: int  # summaries of sessions that lost turns: cleared, to be made again
    kept_turns: int = 0  # their turns in sessions not ended yet: never cut into, so kept (and said so)
    kept_sessions: int = 0  # sessions they started that have not ended yet, kept likewise
    events: int = 0  # the tutor's tool calls that may quote them, in sessions they did not start
    posts: int = 0  # the bot's alerts-channel posts quoting what went: deleted from Discord next
    mentions: int = 0  # turns that stay whose words named them: the name taken out


@dataclass(frozen=True, slots=True)
class GuildSettings:
    """Per-guild limits and channels; defaults apply when the guild never saved settings."""

    guild_id: int
    moderator_role_id: int | None = None
    alerts_channel_id: int | None = None
    starter_role_id: int | None = None
    daily_minutes: int = DEFAULT_DAILY_MINUTES
    max_session_minutes: int = DEFAULT_MAX_SESSION_MINUTES
    retention_days: int = DEFAULT_RETENTION_DAYS
    daily_budget_cents: int = DEFAULT_DAILY_BUDGET_CENTS
    turn_pause_ms: int | None = None  # None: the default by age (bot.turn_taking)
    updated_at: datetime | None = None  # None: never saved, these are the defaults
    time_zone: str | None = None  # IANA name; None is UTC (see bot.timezones)

    @property
    def daily_budget_usd(self) -> float:
        return self.daily_budget_cents / 100


@dataclass(frozen=True, slots=True)
class CustomLevel:
    """A level a guild's moderators added on top of the built-in catalog."""

    guild_id: int
    name: str  # the slug commands use
    description: str
    created_by: int
    created_at: datetime
    title: str | None = None  # what the moderator typed; None for topics added before titles were kept


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Summed usage snapshots (of a session, or of a server's day): tokens by how they are billed, and dollars."""

    tokens: TokenCounts = field(default_factory=TokenCounts)
    total_tokens: int = 0  # as the server reported it (falls back to the sum of the kinds)
    cost_usd: float = 0.0
    snapshots: int = 0


@dataclass(frozen=True, slots=True)
class EventRow:
    """Something the tutor did or the bot decided during a session: a tool call or a budget stop.

    `turn_id` is the turn it belongs to (for an alert: what the child said), `reason` the model's or the
    bot's words for why, `outcome` what the bot did about it.
    """

    id: int
    session_id: int
    guild_id: int
    turn_id: int | None
    at: datetime
    kind: EventKind
    name: str
    call_id: str | None
    category: str | None
    reason: str
    outcome: str


POST_KINDS: frozenset[str] = frozenset({"flagged", "alert", "summary"})


@dataclass(frozen=True, slots=True)
class AlertPostRow:
    """A message the bot posted in an alerts channel about a session, to be deleted once its words are."""

    id: int
    guild_id: int
    channel_id: int
    message_id: int
    session_id: int
    kind: str

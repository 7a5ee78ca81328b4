"""The public shapes of a tutor conversation: what starts one, what it reports, how it ended, who listens.

Shared by `bot.conversation` (which fills them), `bot.tutor` (the registry) and the cogs (which render them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from bot.languages import DEFAULT_LANGUAGE, Language
from bot.levels import Level

if TYPE_CHECKING:
    from bot.conversation import Conversation


@dataclass(frozen=True, slots=True)
class StartRequest:
    """Everything `/tutor start` collected, already validated by the cog."""

    guild_id: int
    voice_channel: Any  # discord.VoiceChannel | discord.StageChannel
    starter_id: int
    starter_name: str
    level: Level
    age: int
    language: Language = DEFAULT_LANGUAGE
    greet: bool = True  # the tutor opens with hello and says it is a computer helper (tests of exact turns: False)
    # Filled in by `Conversations.start` from storage:
    kid_names: Mapping[int, str] = field(default_factory=dict)  # member id → the name they chose (bot.kid_names)
    time_zone: str | None = None  # the server's (bot.timezones); None is UTC


@dataclass(frozen=True, slots=True)
class ConversationResult:
    """How a conversation ended, for the goodbye message and the moderators."""

    guild_id: int
    session_id: int
    channel_id: int
    duration_s: float
    turns: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConversationStatus:
    """The live figures `/tutor status` shows."""

    guild_id: int
    session_id: int
    channel_id: int
    channel_name: str
    level_title: str
    age: int
    starter_name: str
    started_at: datetime
    uptime_s: float
    speakers: list[str]
    turns: int
    flagged_turns: int
    reconnects: int
    live_connected: bool
    packets_received: int
    packets_dropped: int
    packets_concealed: int
    playback_buffered_ms: float
    underruns: int
    input_latency_ms: float | None
    reply_latency_ms: float | None
    minutes_used_today: float
    daily_minutes: int
    session_cost_usd: float = 0.0  # this conversation's usage snapshots, summed
    session_tokens: int = 0
    spent_today_usd: float = 0.0  # the server's day, this conversation included
    daily_budget_usd: float = float("inf")
    max_session_minutes: int = 30

    @property
    def minutes_left(self) -> float:
        """Until the first limit ends the talk: today's minutes or this session's length."""
        return max(0.0, min(self.daily_minutes - self.minutes_used_today,
                            self.max_session_minutes - self.uptime_s / 60))


class ConversationObserver(Protocol):
    """What cogs implement to show events in Discord; every hook is optional."""

    async def on_started(self, conversation: Conversation) -> None: ...
    async def on_turn_flagged(self, conversation: Conversation, turn: Any) -> None: ...
    async def on_alert(self, conversation: Conversation, event: Any, turn: Any) -> None: ...
    async def on_ended(self, conversation: Conversation, result: ConversationResult) -> None: ...
    async def on_failed(self, conversation: Conversation, reason: str) -> None: ...

"""When a running conversation must end on its own: pure rules, checked by the conversation's watchdog.

Kept apart from the wiring so every rule is tested with plain numbers, no voice connection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bot import endings
from bot.cost import dollars

EMPTY_CHANNEL_GRACE_S = 60.0  # nobody but bots in the channel this long → stop
VOICE_LOST_GRACE_S = 15.0  # discord.py reconnects by itself; give it this long
# What the tutor is told to explain in its goodbye (kids hear it): no "server", no dollars.
TODAYS_TIME_USED = "the tutor's time for today is used up"


@dataclass(frozen=True, slots=True)
class StopReason:
    """Why the watchdog ends a conversation; `goodbye` when the tutor should say bye first.

    `text` is stored and shown to the grown-ups; `spoken`, when set, is what the tutor is told to explain
    to the kids instead (no dollars in a goodbye). `budget` marks a stop by the daily budget.
    """

    text: str
    goodbye: bool = False
    spoken: str | None = None
    budget: bool = False


@dataclass(frozen=True, slots=True)
class WatchdogReading:
    """What the watchdog saw on one tick (all times from time.monotonic())."""

    now: float
    started_at: float
    voice_connected: bool
    in_original_channel: bool
    humans_in_channel: int
    max_session_minutes: int
    minutes_used_today: float
    daily_minutes: int
    spent_today_usd: float = 0.0  # the server's usage snapshots today, this conversation's included
    daily_budget_usd: float = math.inf


class LimitRules:
    """Remembers when a bad condition started, so each rule can have a grace period."""

    def __init__(self) -> None:
        self._empty_since: float | None = None
        self._disconnected_since: float | None = None

    def check(self, r: WatchdogReading) -> StopReason | None:
        """The first rule that says stop, or None to carry on."""
        if not r.in_original_channel and r.voice_connected:
            return StopReason(endings.MOVED)
        self._disconnected_since = _since(self._disconnected_since, not r.voice_connected, r.now)
        if self._disconnected_since is not None and r.now - self._disconnected_since >= VOICE_LOST_GRACE_S:
            return StopReason(endings.DISCONNECTED)
        self._empty_since = _since(self._empty_since, r.humans_in_channel == 0, r.now)
        if self._empty_since is not None and r.now - self._empty_since >= EMPTY_CHANNEL_GRACE_S:
            return StopReason(endings.EVERYONE_LEFT)
        if r.now - r.started_at >= r.max_session_minutes * 60:
            return StopReason(endings.session_limit(r.max_session_minutes), goodbye=True,
                              spoken=f"this talk has reached its {r.max_session_minutes}-minute limit")
        if r.minutes_used_today >= r.daily_minutes:
            return StopReason(endings.daily_limit(r.daily_minutes), goodbye=True, spoken=TODAYS_TIME_USED)
        if budget_spent(r.spent_today_usd, r.daily_budget_usd):
            return StopReason(endings.daily_budget(dollars(r.daily_budget_usd), dollars(r.spent_today_usd)),
                              goodbye=True, spoken=TODAYS_TIME_USED, budget=True)
        return None


def budget_spent(spent_usd: float, budget_usd: float) -> bool:
    """The daily budget rule, shared by the watchdog and `/tutor start`: spent up to the budget means stop."""
    return spent_usd >= budget_usd


def _since(started: float | None, condition: bool, now: float) -> float | None:
    if not condition:
        return None
    return now if started is None else started

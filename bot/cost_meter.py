"""One conversation's running bill: its usage snapshots priced as they arrive, and the server's day so far.

The bill is the sum of the per-turn snapshots (`bot.cost`); the daily budget compares the server's spend
today with its limit. That spend is read from the database now and then (every session of the day counts,
and the day's start is the database's business) and this conversation's own snapshots since that read are
added in memory, so the watchdog can check the budget every second without a query.
"""

from __future__ import annotations

from bot.cost import Prices, TokenCounts, usage_tokens


class CostMeter:
    """This session's tokens and dollars, and the server's spend today including them."""

    def __init__(self, prices: Prices, *, spent_today_usd: float = 0.0) -> None:
        self._prices = prices
        self.tokens = TokenCounts()
        self.total_tokens = 0
        self.cost_usd = 0.0
        self._spent_at_read = spent_today_usd  # the server's spend today when last read
        self._cost_at_read = 0.0

    def add(self, usage: object) -> tuple[TokenCounts, int, float]:
        """One `bot.live.events.Usage` snapshot: returns (tokens by kind, total tokens, dollars) as billed."""
        tokens = usage_tokens(usage)
        cost = tokens.cost(self._prices)
        total = max(getattr(usage, "total_tokens", 0) or 0, tokens.total)
        self.tokens += tokens
        self.total_tokens += total
        self.cost_usd += cost
        return tokens, total, cost

    @property
    def spent_today_usd(self) -> float:
        """The server's spend today: the figure last read, plus this session's snapshots since then."""
        return self._spent_at_read + self.cost_usd - self._cost_at_read

    def read_spend(self, spent_today_usd: float, *, session_cost_then: float) -> None:
        """A fresh figure from the database, which held this session's snapshots up to `session_cost_then`.

        Snapshots still queued for the turn writer at that moment are missed until the next read (a turn's worth).
        """
        self._spent_at_read = spent_today_usd
        self._cost_at_read = session_cost_then

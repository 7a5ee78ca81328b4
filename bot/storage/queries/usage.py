"""Cost and tutor actions: per-turn usage snapshots (summed per session and per server per day) and the
events of a session (tool calls, budget stops), each stored with the turn it belongs to."""

from __future__ import annotations

from typing import Any

from bot.cost import TokenCounts
from bot.storage.db import Transaction
from bot.storage.models import EVENT_KINDS, EventRow, UsageTotals, from_epoch, storable_text, to_epoch
from bot.storage.queries.base import Queries, Timestamp, current_time, day_start

_TOTALS = (
    "COUNT(*) AS snapshots, COALESCE(SUM(u.text_in_tokens), 0) AS text_in, "
    "COALESCE(SUM(u.audio_in_tokens), 0) AS audio_in, COALESCE(SUM(u.text_out_tokens), 0) AS text_out, "
    "COALESCE(SUM(u.audio_out_tokens), 0) AS audio_out, COALESCE(SUM(u.thoughts_tokens), 0) AS thoughts, "
    "COALESCE(SUM(u.total_tokens), 0) AS total_tokens, COALESCE(SUM(u.cost_usd), 0) AS cost_usd"
)


class UsageQueries(Queries):
    async def add_usage(
        self, guild_id: int, session_id: int, tokens: TokenCounts, cost_usd: float, *, total_tokens: int | None = None,
        turn_id: int | None = None, at: Timestamp | None = None,
    ) -> int:
        """Store one usage snapshot of a session (with the turn it came with); returns its id.

        Raises LookupError if the session is not in this guild, ValueError for negative numbers.
        """
        if cost_usd < 0 or min(getattr(tokens, name) for name in TokenCounts.__dataclass_fields__) < 0:
            raise ValueError("usage cannot be negative")
        params = {"guild_id": guild_id, "session_id": session_id, "turn_id": turn_id,
                  "at": current_time() if at is None else to_epoch(at), "text_in": tokens.text_in,
                  "audio_in": tokens.audio_in, "text_out": tokens.text_out, "audio_out": tokens.audio_out,
                  "thoughts": tokens.thoughts, "total": max(total_tokens or 0, tokens.total), "cost": cost_usd}
        return await self._insert_for_session(
            "INSERT INTO turn_usage (session_id, guild_id, turn_id, at, text_in_tokens, audio_in_tokens, "
            "text_out_tokens, audio_out_tokens, thoughts_tokens, total_tokens, cost_usd) VALUES (:session_id, "
            ":guild_id, (SELECT t.id FROM turns t WHERE t.guild_id = :guild_id AND t.session_id = :session_id "
            "AND t.id = :turn_id), :at, :text_in, :audio_in, :text_out, :audio_out, :thoughts, :total, :cost) "
            "RETURNING id",
            params)

    async def session_usage(self, guild_id: int, session_id: int) -> UsageTotals:
        """What one session cost so far: the sum of its snapshots (zeros if none, or not in this guild)."""
        row = await self._db.fetch_one(
            f"SELECT {_TOTALS} FROM turn_usage u WHERE u.guild_id = :guild_id "  # noqa: S608
            "AND u.session_id = :session_id", {"guild_id": guild_id, "session_id": session_id})
        return _totals(row)

    async def usage_today(self, guild_id: int, now: Timestamp | None = None, *,
                          time_zone: str | None = None) -> UsageTotals:
        """What this server spent today (since midnight in its time zone, like the daily minutes), over all its
        sessions."""
        at = current_time() if now is None else to_epoch(now)
        row = await self._db.fetch_one(
            f"SELECT {_TOTALS} FROM turn_usage u WHERE u.guild_id = :guild_id "  # noqa: S608
            "AND u.at >= :day_start AND u.at <= :now",
            {"guild_id": guild_id, "day_start": day_start(at, time_zone), "now": at})
        return _totals(row)

    async def add_event(
        self, guild_id: int, session_id: int, kind: str, name: str, *, turn_id: int | None = None,
        call_id: str | None = None, category: str | None = None, reason: str = "", outcome: str = "",
        at: Timestamp | None = None,
    ) -> int:
        """Store a tool call or a budget stop with the turn it belongs to; returns its id.

        A `turn_id` that is not a turn of this session is stored as no turn. Raises LookupError if the
        session is not in this guild, ValueError for an unknown kind or a missing name.
        """
        if kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {sorted(EVENT_KINDS)}, got {kind!r}")
        if not name.strip():
            raise ValueError("an event needs a name")
        def text(value: str | None) -> str | None:  # the model's words: half an emoji must not lose an alert
            return None if value is None else storable_text(value)

        params = {"guild_id": guild_id, "session_id": session_id, "turn_id": turn_id,
                  "at": current_time() if at is None else to_epoch(at), "kind": kind, "name": text(name.strip()),
                  "call_id": text(call_id), "category": text(category), "reason": text(reason),
                  "outcome": text(outcome)}
        return await self._insert_for_session(
            "INSERT INTO session_events (session_id, guild_id, turn_id, at, kind, name, call_id, category, reason, "
            "outcome) VALUES (:session_id, :guild_id, (SELECT t.id FROM turns t WHERE t.guild_id = :guild_id "
            "AND t.session_id = :session_id AND t.id = :turn_id), :at, :kind, :name, :call_id, :category, :reason, "
            ":outcome) RETURNING id", params)

    async def set_event_outcome(self, guild_id: int, session_id: int, call_id: str, outcome: str) -> bool:
        """Record what finally became of a tool call (e.g. cancelled); False if there is no such call here."""
        count = await self._execute(
            "UPDATE session_events SET outcome = :outcome WHERE guild_id = :guild_id AND session_id = :session_id "
            "AND call_id = :call_id",
            {"guild_id": guild_id, "session_id": session_id, "call_id": storable_text(call_id),
             "outcome": storable_text(outcome)})
        return count > 0

    async def session_events(self, guild_id: int, session_id: int) -> list[EventRow]:
        """A session's tool calls and budget stops in order; empty if the session is not in this guild."""
        rows = await self._db.fetch_all(
            "SELECT e.* FROM session_events e WHERE e.guild_id = :guild_id AND e.session_id = :session_id "
            "ORDER BY e.at, e.id", {"guild_id": guild_id, "session_id": session_id})
        return [EventRow(id=r["id"], session_id=r["session_id"], guild_id=r["guild_id"], turn_id=r["turn_id"],
                         at=from_epoch(r["at"]), kind=r["kind"], name=r["name"], call_id=r["call_id"],
                         category=r["category"], reason=r["reason"], outcome=r["outcome"]) for r in rows]

    async def _insert_for_session(self, sql: str, params: dict[str, Any]) -> int:
        """One INSERT … RETURNING id tied to a session of this guild, after checking the session is there."""

        async def work(tx: Transaction) -> int:
            if await tx.fetch_one(
                "SELECT 1 FROM sessions WHERE guild_id = :guild_id AND id = :session_id", params,
            ) is None:
                raise LookupError(f"no session {params['session_id']} in guild {params['guild_id']}")
            row = await tx.fetch_one(sql, params)
            return int(row["id"])

        return await self._db.write(work)


def _totals(row: Any) -> UsageTotals:
    if row is None:
        return UsageTotals()
    tokens = TokenCounts(text_in=int(row["text_in"]), audio_in=int(row["audio_in"]), text_out=int(row["text_out"]),
                         audio_out=int(row["audio_out"]), thoughts=int(row["thoughts"]))
    return UsageTotals(tokens, total_tokens=int(row["total_tokens"]), cost_usd=float(row["cost_usd"]),
                       snapshots=int(row["snapshots"]))

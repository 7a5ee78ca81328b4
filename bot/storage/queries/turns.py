"""Turns: committing each finished turn, reading a transcript, and the turns that may seed Live history."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from bot.storage.db import Transaction
from bot.storage.models import ROLES, TurnRow, storable_text, to_epoch
from bot.storage.queries.base import Queries, Timestamp, in_list, page_size


class TurnQueries(Queries):
    async def add_turn(
        self, guild_id: int, session_id: int, role: str, text: str, started_at: Timestamp, ended_at: Timestamp,
        *, speaker_id: int | None = None, speaker_ids: Sequence[int] = (), typed: bool = False,
        speaker_name: str | None = None, interrupted: bool = False, flag_reason: str | None = None,
    ) -> int:
        """Commit one finished turn now (a crash loses at most the turn in progress); returns its id.

        `speaker_ids`: every member who spoke in it, the one to credit first first (`speaker_id` is the
        one-speaker shorthand); `typed` when they typed it. Raises LookupError if the session is not in this
        guild (e.g. deleted by a moderator meanwhile).
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}, got {role!r}")
        start, end = to_epoch(started_at), to_epoch(ended_at)
        if end < start:
            raise ValueError("a turn cannot end before it starts")
        members = list(dict.fromkeys([*([speaker_id] if speaker_id is not None else []), *speaker_ids]))
        params = {"guild_id": guild_id, "session_id": session_id, "role": role,
                  "speaker_name": None if speaker_name is None else storable_text(speaker_name),
                  "text": storable_text(text), "started_at": start, "ended_at": end,
                  "interrupted": int(interrupted), "flag_reason": flag_reason}

        async def work(tx: Transaction) -> int:
            if await tx.fetch_one(
                "SELECT 1 FROM sessions WHERE guild_id = :guild_id AND id = :session_id", params,
            ) is None:
                raise LookupError(f"no session {session_id} in guild {guild_id}")
            row = await tx.fetch_one(
                "INSERT INTO turns (session_id, guild_id, role, speaker_name, text, started_at, "
                "ended_at, interrupted, flag_reason) VALUES (:session_id, :guild_id, :role, "
                ":speaker_name, :text, :started_at, :ended_at, :interrupted, :flag_reason) RETURNING id", params,
            )
            turn_id = int(row["id"])
            for ordinal, member_id in enumerate(members):
                await tx.execute(
                    "INSERT INTO turn_speakers (turn_id, guild_id, member_id, ordinal, how) "
                    "VALUES (:turn_id, :guild_id, :member_id, :ordinal, :how)",
                    {"turn_id": turn_id, "guild_id": guild_id, "member_id": member_id, "ordinal": ordinal,
                     "how": "typed" if typed else "spoke"})
            return turn_id

        return await self._db.write(work)

    async def get_turns(self, guild_id: int, session_id: int) -> list[TurnRow]:
        """A session's transcript in spoken order; empty if the session is not in this guild."""
        rows = await self._db.fetch_all(
            "SELECT t.* FROM turns t WHERE t.guild_id = :guild_id AND t.session_id = :session_id "
            "ORDER BY t.started_at, t.id",
            {"guild_id": guild_id, "session_id": session_id},
        )
        return await self._turns_with_speakers(guild_id, rows)

    async def recent_turns_for_level(
        self, guild_id: int, level: str, limit: int = 20, *, exclude_session_id: int | None = None,
        participants: Collection[int] | None = None,
    ) -> list[TurnRow]:
        """The last child/tutor turns of this guild's sessions on `level`, oldest first: the candidates to seed
        Live history with (`bot.history.seedable` leaves out flagged exchanges, so flagged turns are included).

        `participants`: only sessions one of these members started, spoke or typed in. A server can hold several
        families' kids: one kid's conversation must not be replayed to another's. System notes are left out.
        """
        members = sorted(set(participants or ()))
        if participants is not None and not members:
            return []
        placeholders, member_params = in_list("member", members)
        among = "" if participants is None else (
            f"AND (s.starter_id IN ({placeholders}) OR EXISTS (SELECT 1 FROM turns pt JOIN turn_speakers ps "  # noqa: S608
            "ON ps.turn_id = pt.id AND ps.guild_id = pt.guild_id WHERE pt.guild_id = s.guild_id "
            f"AND pt.session_id = s.id AND ps.member_id IN ({placeholders}))) ")
        rows = await self._db.fetch_all(
            "SELECT t.* FROM turns t JOIN sessions s ON s.id = t.session_id AND s.guild_id = t.guild_id "  # noqa: S608
            "WHERE t.guild_id = :guild_id AND s.level = :level AND t.role IN ('child', 'tutor') "
            f"AND (t.session_id != :exclude OR :exclude IS NULL) {among}"
            "ORDER BY t.started_at DESC, t.id DESC LIMIT :limit",
            {"guild_id": guild_id, "level": level, "exclude": exclude_session_id, "limit": page_size(limit),
             **member_params},
        )
        return await self._turns_with_speakers(guild_id, list(reversed(rows)))

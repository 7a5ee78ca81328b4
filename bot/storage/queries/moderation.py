"""Moderation and erasure: flags, deleting a session or a member's words, and the retention purge."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from bot.storage.db import Transaction
from bot.storage.models import DEFAULT_RETENTION_DAYS, ErasureReport, TurnRow, to_epoch
from bot.storage.queries.base import Queries, Timestamp, current_time, in_list, like_escape, page_size
from bot.storage.queries.posts import mark_posts_stale

log = logging.getLogger("bot.storage.repository")


class ModerationQueries(Queries):
    async def flagged_turns(self, guild_id: int, since: Timestamp | None = None, limit: int = 25) -> list[TurnRow]:
        """Flagged turns of this guild, newest first."""
        rows = await self._db.fetch_all(
            "SELECT t.* FROM turns t WHERE t.guild_id = :guild_id AND t.flag_reason IS NOT NULL "
            "AND (t.started_at >= :since OR :since IS NULL) ORDER BY t.started_at DESC, t.id DESC LIMIT :limit",
            {"guild_id": guild_id, "since": None if since is None else to_epoch(since), "limit": page_size(limit)},
        )
        return await self._turns_with_speakers(guild_id, rows)

    async def flag_turn(self, guild_id: int, turn_id: int, reason: str) -> bool:
        """Mark a turn for moderators; False if the turn is not in this guild."""
        if not reason.strip():
            raise ValueError("a flag needs a reason")
        count = await self._execute(
            "UPDATE turns SET flag_reason = :reason WHERE guild_id = :guild_id AND id = :turn_id",
            {"guild_id": guild_id, "turn_id": turn_id, "reason": reason},
        )
        return count == 1

    async def delete_session(self, guild_id: int, session_id: int) -> int:
        """Delete a session and its transcript; returns the number of turns deleted (0 if not in this guild)."""
        sessions, turns = await self._delete_where(
            guild_id, "s.id = :session_id", {"session_id": session_id}, extra_turns="FALSE")
        if sessions:
            log.info("storage.session_deleted", extra={"guild_id": guild_id, "session_id": session_id,
                                                       "turns": turns})
        return turns

    async def delete_member_data(self, guild_id: int, member_id: int, *, names: Sequence[str] = ()) -> ErasureReport:
        """Forget a member in this guild: the sessions they started (whole transcripts) and every turn they spoke
        or typed in elsewhere — a shared turn whole, since its words cannot be separated. Their name is taken
        out of the speaker labels of turns that stay (rows from before speakers were recorded per member; `names`
        are the names they go by now, the names they were recorded under are added). Summaries of sessions that
        lost turns are cleared (status 'pending', so they are made again). Sessions not ended yet are not
        touched (the caller refuses while the member is in a running one; a row whose end could not be written
        is closed at the next start-up): what of theirs they keep is counted in the report."""
        bound = {"guild_id": guild_id, "member_id": member_id}
        theirs = ("SELECT s.id FROM sessions s WHERE s.guild_id = :guild_id AND s.starter_id = :member_id "
                  "AND s.ended_at IS NOT NULL")
        spoken = "SELECT ts.turn_id FROM turn_speakers ts WHERE ts.guild_id = :guild_id AND ts.member_id = :member_id"
        running = "SELECT r.id FROM sessions r WHERE r.guild_id = :guild_id AND r.ended_at IS NULL"

        async def work(tx: Transaction) -> ErasureReport:
            known = {name for name in names if name and name.strip()} | {str(member_id)}
            known |= {row[0] for row in await tx.fetch_all(  # the label of a turn they were the only speaker of
                f"SELECT DISTINCT t.speaker_name FROM turns t WHERE t.guild_id = :guild_id "  # noqa: S608
                f"AND t.speaker_name IS NOT NULL AND t.id IN ({spoken}) AND (SELECT COUNT(*) FROM turn_speakers c "
                "WHERE c.turn_id = t.id) = 1", bound)}
            known |= {row[0] for row in await tx.fetch_all(
                "SELECT DISTINCT s.starter_name FROM sessions s WHERE s.guild_id = :guild_id "
                "AND s.starter_id = :member_id", bound)}
            known |= {row[0] for row in await tx.fetch_all(  # the name they chose, which labels and the tutor use
                "SELECT name FROM member_names WHERE guild_id = :guild_id AND member_id = :member_id", bound)}
            touched = [row[0] for row in await tx.fetch_all(
                f"SELECT DISTINCT t.session_id FROM turns t WHERE t.guild_id = :guild_id "  # noqa: S608
                f"AND t.id IN ({spoken}) AND t.session_id NOT IN ({theirs}) AND t.session_id NOT IN ({running})",
                bound)]
            kept_turns = (await tx.fetch_all(
                f"SELECT COUNT(*) FROM turns t WHERE t.guild_id = :guild_id AND t.id IN ({spoken}) "  # noqa: S608
                f"AND t.session_id IN ({running})", bound))[0][0]
            kept_sessions = (await tx.fetch_all(
                "SELECT COUNT(*) FROM sessions s WHERE s.guild_id = :guild_id AND s.starter_id = :member_id "
                "AND s.ended_at IS NULL", bound))[0][0]
            posts = await _mark_their_posts(tx, bound, touched, theirs, spoken, running)
            events = await _delete_their_events(tx, bound, touched, spoken)
            turns = await tx.execute(
                f"DELETE FROM turns AS t WHERE t.guild_id = :guild_id AND t.session_id NOT IN ({running}) "  # noqa: S608
                f"AND (t.session_id IN ({theirs}) OR t.id IN ({spoken}))", bound)
            sessions = await tx.execute(
                f"DELETE FROM sessions WHERE guild_id = :guild_id AND id IN ({theirs})", bound)  # noqa: S608
            labels = await _scrub_labels(tx, guild_id, known, running)
            mentions = await _scrub_mentions(tx, guild_id, known, touched)
            summaries = 0
            if touched:
                placeholders, ids = in_list("session", touched)
                summaries = await tx.execute(
                    "UPDATE sessions SET summary = NULL, summary_status = 'pending' "  # noqa: S608
                    f"WHERE guild_id = :guild_id AND id IN ({placeholders}) AND summary_status != 'pending'",
                    {"guild_id": guild_id, **ids})
            await tx.execute("DELETE FROM member_names WHERE guild_id = :guild_id AND member_id = :member_id",
                             bound)  # the name they chose goes too
            return ErasureReport(sessions=sessions, turns=turns, labels=labels, summaries=summaries,
                                 kept_turns=kept_turns, kept_sessions=kept_sessions, events=events, posts=posts,
                                 mentions=mentions)

        report = await self._db.write(work)
        log.info("storage.member_deleted", extra={"guild_id": guild_id, "member_id": member_id,
                                                  "sessions": report.sessions, "turns": report.turns,
                                                  "labels": report.labels, "summaries": report.summaries,
                                                  "events": report.events, "posts": report.posts,
                                                  "mentions": report.mentions,
                                                  "kept_turns": report.kept_turns,
                                                  "kept_sessions": report.kept_sessions})
        return report

    async def purge_older_than(self, guild_id: int, days: int, *, now: Timestamp | None = None) -> tuple[int, int]:
        """Delete this guild's sessions that ended more than `days` ago; running ones are kept."""
        if days < 0:
            raise ValueError("days must not be negative")
        cutoff = (current_time() if now is None else to_epoch(now)) - days * 86400
        return await self._delete_where(
            guild_id, "s.ended_at IS NOT NULL AND s.ended_at < :cutoff", {"cutoff": cutoff}, extra_turns="FALSE")

    async def purge_all_expired(self, now: Timestamp | None = None) -> dict[int, tuple[int, int]]:
        """Apply each guild's `retention_days` (30 without settings); returns only guilds that lost something."""
        at = current_time() if now is None else to_epoch(now)
        purged: dict[int, tuple[int, int]] = {}
        for guild_id, retention_days in await self._guilds_with_ended_sessions():
            counts = await self.purge_older_than(guild_id, retention_days, now=at)
            if counts != (0, 0):
                purged[guild_id] = counts
                log.info("storage.purged", extra={"guild_id": guild_id, "sessions": counts[0], "turns": counts[1]})
        return purged

    async def _guilds_with_ended_sessions(self) -> list[tuple[int, int]]:
        """This process's shards' guilds that have ended sessions, with their retention (each purged once)."""
        mine, shard_params = self._shards.sql_filter("guild_id")
        rows = await self._db.fetch_all(
            "SELECT g.guild_id, COALESCE(gs.retention_days, :default_days) AS retention_days "  # noqa: S608
            f"FROM (SELECT DISTINCT guild_id FROM sessions WHERE ended_at IS NOT NULL AND {mine}) g "
            "LEFT JOIN guild_settings gs ON gs.guild_id = g.guild_id ORDER BY g.guild_id",
            {"default_days": DEFAULT_RETENTION_DAYS, **shard_params},
        )
        return [(row["guild_id"], row["retention_days"]) for row in rows]

    async def _delete_where(
        self, guild_id: int, session_filter: str, params: dict[str, Any], *, extra_turns: str,
    ) -> tuple[int, int]:
        """Delete matching sessions of one guild with all their turns, plus turns matching `extra_turns`.

        Turns are deleted explicitly (to count them); ON DELETE CASCADE is the safety net.
        `session_filter` and `extra_turns` are SQL fragments written in this module, never user input.
        """
        bound = {**params, "guild_id": guild_id}
        sessions_sql = f"SELECT s.id FROM sessions s WHERE s.guild_id = :guild_id AND {session_filter}"  # noqa: S608

        async def work(tx: Transaction) -> tuple[int, int]:
            await mark_posts_stale(tx, bound, f"p.session_id IN ({sessions_sql})")  # gone from Discord next
            turns = await tx.execute(
                f"DELETE FROM turns AS t WHERE t.guild_id = :guild_id "  # noqa: S608
                f"AND (t.session_id IN ({sessions_sql}) OR {extra_turns})", bound,
            )
            sessions = await tx.execute(
                f"DELETE FROM sessions WHERE guild_id = :guild_id AND id IN ({sessions_sql})", bound,  # noqa: S608
            )
            return sessions, turns

        return await self._db.write(work)


async def _mark_their_posts(tx: Transaction, bound: dict[str, Any], touched: Sequence[int], theirs: str, spoken: str,
                            running: str) -> int:
    """Before the rows go: the alert posts quoting what is erased become stale (deleted from Discord next) — those
    of their sessions, of their turns, of the tool calls `_delete_their_events` takes, and the summaries of
    sessions they spoke in (a summary included them)."""
    placeholders, ids = in_list("touched", touched)
    in_touched = (f"p.session_id IN ({placeholders}) AND (p.kind = 'summary' OR p.event_id IN (SELECT e.id FROM "  # noqa: S608
                  "session_events e WHERE e.guild_id = :guild_id AND e.session_id = p.session_id "
                  "AND e.turn_id IS NULL AND e.kind = 'tool_call'))") if touched else "FALSE"
    return await mark_posts_stale(tx, {**bound, **ids}, f"p.session_id NOT IN ({running}) AND (p.session_id IN "
                                  f"({theirs}) OR p.turn_id IN ({spoken}) OR {in_touched})")


async def _delete_their_events(tx: Transaction, bound: dict[str, Any], touched: Sequence[int], spoken: str) -> int:
    """The tutor's tool calls that may quote the member, in sessions they spoke in but did not start: those of
    their turns (they would go with the turns anyway; counted here), and those stored with no turn (the prompt's
    words never came), which may be theirs as much as a shared turn is. Returns how many went."""
    if not touched:
        return 0
    placeholders, ids = in_list("touched", touched)
    return await tx.execute(
        f"DELETE FROM session_events WHERE guild_id = :guild_id AND session_id IN ({placeholders}) "  # noqa: S608
        f"AND (turn_id IN ({spoken}) OR (turn_id IS NULL AND kind = 'tool_call'))", {**bound, **ids})


NAME_REMOVED = "(name removed)"


async def _scrub_mentions(tx: Transaction, guild_id: int, names: set[str], touched: Sequence[int]) -> int:
    """Take `names` out of the words of the turns that stay in the sessions the member spoke in ("Great job,
    Ana!" said by the tutor, or another kid calling them). A name is matched as a whole word, as written and
    capitalised, never lower-cased: "Max" goes, "max speed" stays. Returns how many turns changed."""
    spellings = {variant for name in names if len(name.strip()) >= 2 and any(ch.isalpha() for ch in name)
                 for variant in (name.strip(), name.strip()[0].upper() + name.strip()[1:])}
    if not touched or not spellings:
        return 0
    pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, sorted(spellings, key=len, reverse=True))) + r")(?!\w)")
    placeholders, ids = in_list("touched", touched)
    changed = 0
    for row in await tx.fetch_all(
            f"SELECT t.id, t.text FROM turns t WHERE t.guild_id = :guild_id "  # noqa: S608
            f"AND t.session_id IN ({placeholders})", {"guild_id": guild_id, **ids}):
        text = pattern.sub(NAME_REMOVED, row["text"])
        if text != row["text"]:
            changed += await tx.execute("UPDATE turns SET text = :text WHERE guild_id = :guild_id AND id = :turn_id",
                                        {"guild_id": guild_id, "turn_id": row["id"], "text": text})
    return changed


async def _scrub_labels(tx: Transaction, guild_id: int, names: set[str], running: str) -> int:
    """Take `names` out of the comma-separated speaker labels of this guild's child turns; returns how many
    labels changed. `running` (SQL of the running sessions' ids) is left alone."""
    changed: dict[int, str | None] = {}
    for name in sorted(names):
        rows = await tx.fetch_all(
            "SELECT t.id, t.speaker_name FROM turns t WHERE t.guild_id = :guild_id AND t.role = 'child' "  # noqa: S608
            f"AND t.speaker_name LIKE :pattern ESCAPE '\\' AND t.session_id NOT IN ({running})",
            {"guild_id": guild_id, "pattern": f"%{like_escape(name)}%"})
        for row in rows:
            label = changed.get(row["id"], row["speaker_name"])
            parts = [part.strip() for part in (label or "").split(",")]
            if name in parts:
                changed[row["id"]] = ", ".join(part for part in parts if part != name) or None
    for turn_id, label in changed.items():
        await tx.execute("UPDATE turns SET speaker_name = :label WHERE guild_id = :guild_id AND id = :turn_id",
                         {"guild_id": guild_id, "turn_id": turn_id, "label": label})
    return len(changed)

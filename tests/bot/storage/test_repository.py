"""bot.storage.repository: every query round-trips on both backends (a real SQLite file, a real PostgreSQL
server), and every one stays inside its guild."""

from __future__ import annotations

import ast
import inspect
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.cost import TokenCounts
from bot.storage.db import Database, IntegrityError
from bot.storage.models import GuildSettings
from bot.storage.repository import CROSS_GUILD_QUERIES, Repository

GUILD, OTHER_GUILD = 100, 200
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(database: Database) -> Database:
    """Each test runs on SQLite and on PostgreSQL (tests/conftest.py)."""
    return database


@pytest.fixture
def repo(db: Database) -> Repository:
    return Repository(db)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def conversation(
    repo: Repository, guild_id: int = GUILD, *, starter: int = 10, level: str = "space", start: float = 0,
    turns: int = 2, ended: bool = True,
) -> tuple[int, list[int]]:
    """A session starting `start` minutes after T0 with alternating child/tutor turns one minute each."""
    session_id = await repo.start_session(guild_id, 5, starter, f"kid{starter}", level, 8, started_at=at(start))
    turn_ids = []
    for i in range(turns):
        child = i % 2 == 0
        turn_ids.append(await repo.add_turn(
            guild_id, session_id, "child" if child else "tutor", f"{level} turn {i}", at(start + i), at(start + i + 1),
            speaker_id=starter if child else None, speaker_name=f"kid{starter}" if child else None))
    if ended:
        await repo.end_session(guild_id, session_id, "stopped", ended_at=at(start + max(turns, 1)))
    return session_id, turn_ids


async def count(db: Database, sql: str) -> int:
    row = await db.fetch_one(sql)
    assert row is not None
    return int(row[0])


# ------------------------------------------------------------------ sessions


async def test_start_and_get_session_round_trip(repo: Repository) -> None:
    """A started session reads back with every field, aware UTC times and status 'pending'."""
    session_id = await repo.start_session(GUILD, 5, 10, "Alex", "space", 8, started_at=T0)
    session = await repo.get_session(GUILD, session_id)
    assert session is not None
    assert (session.id, session.guild_id, session.channel_id, session.starter_id) == (session_id, GUILD, 5, 10)
    assert (session.starter_name, session.level, session.age) == ("Alex", "space", 8)
    assert session.started_at == T0 and session.started_at.tzinfo is not None
    assert session.ended_at is None and session.is_running
    assert session.summary is None and session.summary_status == "pending"
    assert session.duration(now=at(3)) == timedelta(minutes=3)


async def test_end_session_once_and_drops_resumption_handle(repo: Repository) -> None:
    """end_session records time and reason, clears the handle, and a second end changes nothing."""
    session_id = await repo.start_session(GUILD, 5, 10, "Alex", "space", 8, started_at=T0)
    assert await repo.set_resumption_handle(GUILD, session_id, "handle-1")
    assert (await repo.get_session(GUILD, session_id)).resumption_handle == "handle-1"
    assert await repo.end_session(GUILD, session_id, "stopped", ended_at=at(7))
    assert not await repo.end_session(GUILD, session_id, "again", ended_at=at(9))
    session = await repo.get_session(GUILD, session_id)
    assert (session.ended_at, session.end_reason, session.resumption_handle) == (at(7), "stopped", None)
    assert not session.is_running and session.duration() == timedelta(minutes=7)
    assert not await repo.set_resumption_handle(GUILD, session_id, "late")


async def test_end_before_start_is_clamped_to_start(repo: Repository) -> None:
    """A clock that steps back cannot produce a negative duration."""
    session_id = await repo.start_session(GUILD, 5, 10, "Alex", "space", 8, started_at=T0)
    await repo.end_session(GUILD, session_id, "stopped", ended_at=at(-5))
    assert (await repo.get_session(GUILD, session_id)).ended_at == T0


async def test_list_sessions_newest_first_with_counts(repo: Repository) -> None:
    """Listing gives newest first, with duration, turn count and flagged count."""
    first, _ = await conversation(repo, start=0, turns=2)
    second, second_turns = await conversation(repo, start=30, turns=3)
    await repo.flag_turn(GUILD, second_turns[1], "unsafe topic")
    rows = await repo.list_sessions(GUILD)
    assert [r.id for r in rows] == [second, first]
    assert (rows[0].turn_count, rows[0].flagged_count, rows[0].duration) == (3, 1, timedelta(minutes=3))
    assert (rows[1].turn_count, rows[1].flagged_count, rows[1].duration) == (2, 0, timedelta(minutes=2))


async def test_list_sessions_running_duration_counts_to_now(repo: Repository) -> None:
    """A running session's listed duration runs up to the query time."""
    await repo.start_session(GUILD, 5, 10, "Alex", "space", 8, started_at=datetime.now(UTC) - timedelta(minutes=4))
    (row,) = await repo.list_sessions(GUILD)
    assert row.is_running and timedelta(minutes=4) <= row.duration < timedelta(minutes=5)


async def test_list_sessions_filters_and_pages(repo: Repository) -> None:
    """member_id matches starters and speakers; level, since, limit and offset narrow the list."""
    alex_space, _ = await conversation(repo, starter=10, level="space", start=0)
    sam_math, _ = await conversation(repo, starter=20, level="math", start=10)
    sam_space, _ = await conversation(repo, starter=20, level="space", start=20)
    await repo.add_turn(GUILD, sam_math, "child", "me too", at(12), at(12.5), speaker_id=10, speaker_name="kid10")
    assert [r.id for r in await repo.list_sessions(GUILD, member_id=10)] == [sam_math, alex_space]
    assert [r.id for r in await repo.list_sessions(GUILD, level="space")] == [sam_space, alex_space]
    assert [r.id for r in await repo.list_sessions(GUILD, since=at(10))] == [sam_space, sam_math]
    assert [r.id for r in await repo.list_sessions(GUILD, limit=1, offset=1)] == [sam_math]
    with pytest.raises(ValueError):
        await repo.list_sessions(GUILD, limit=0)


async def test_search_sessions_by_id_name_and_level(repo: Repository) -> None:
    """Autocomplete matches an id prefix, or a starter name or level substring, case-insensitively."""
    space, _ = await conversation(repo, starter=10, level="space", start=0)
    dinos, _ = await conversation(repo, starter=20, level="dinosaurs", start=10)
    assert [s.id for s in await repo.search_sessions(GUILD, f"#{dinos}")] == [dinos]
    assert [s.id for s in await repo.search_sessions(GUILD, "KID1")] == [space]
    assert [s.id for s in await repo.search_sessions(GUILD, "saur")] == [dinos]
    assert [s.id for s in await repo.search_sessions(GUILD, "")] == [dinos, space]
    assert await repo.search_sessions(GUILD, "%") == []
    assert len(await repo.search_sessions(GUILD, "", limit=1)) == 1


@pytest.mark.parametrize(
    ("spans", "now", "expected_minutes"),
    [
        ([("03-10 23:30", "03-11 00:30")], "03-11 01:00", 30.0),  # crosses midnight: only today's half counts
        ([("03-10 23:30", None)], "03-10 23:50", 20.0),  # running, same day
        ([("03-10 23:30", None)], "03-11 00:10", 10.0),  # running across midnight: counted from midnight
        ([("03-10 10:00", "03-10 10:30")], "03-11 01:00", 0.0),  # yesterday only
        ([("03-11 00:05", "03-11 00:15"), ("03-11 00:20", "03-11 00:50")], "03-11 01:00", 40.0),
        ([("03-11 00:20", "03-11 00:50")], "03-11 00:30", 10.0),  # counted up to `now`
    ],
)
async def test_minutes_used_today_per_utc_day(
    repo: Repository, spans: list[tuple[str, str | None]], now: str, expected_minutes: float,
) -> None:
    """Daily minutes are the overlap of each session with today's UTC day, up to now."""

    def parse(text: str) -> datetime:
        return datetime.strptime(f"2026-{text}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)

    for start, end in spans:
        session_id = await repo.start_session(GUILD, 5, 10, "Alex", "space", 8, started_at=parse(start))
        if end is not None:
            await repo.end_session(GUILD, session_id, "stopped", ended_at=parse(end))
    assert await repo.minutes_used_today(GUILD, now=parse(now)) == pytest.approx(expected_minutes)
    assert await repo.minutes_used_today(OTHER_GUILD, now=parse(now)) == 0.0


async def test_pending_summaries_lists_only_ended_sessions_without_one(repo: Repository) -> None:
    """Ended sessions still 'pending' are listed across guilds (ids only); running or summarised ones are not."""
    pending_a, _ = await conversation(repo, start=0, turns=1)
    running, _ = await conversation(repo, start=10, turns=1, ended=False)
    done, _ = await conversation(repo, start=20, turns=1)
    await repo.set_summary(GUILD, done, "They talked about Mars.", "ok")
    pending_b = await repo.start_session(OTHER_GUILD, 5, 10, "Alex", "space", 8, started_at=at(30))
    await repo.end_session(OTHER_GUILD, pending_b, "stopped", ended_at=at(31))
    found = await repo.pending_summaries()
    assert set(found) == {(GUILD, pending_a), (OTHER_GUILD, pending_b)}
    assert (GUILD, running) not in found


async def test_close_dangling_sessions_ends_at_last_turn(repo: Repository) -> None:
    """After a crash, unfinished sessions end at their last turn (or their start), ended ones stay as they were."""
    talked, _ = await conversation(repo, start=0, turns=3, ended=False)
    silent = await repo.start_session(OTHER_GUILD, 5, 10, "Alex", "space", 8, started_at=at(50))
    finished, _ = await conversation(repo, start=100, turns=1)
    assert await repo.close_dangling_sessions() == 2
    talked_row = await repo.get_session(GUILD, talked)
    assert (talked_row.ended_at, talked_row.end_reason) == (at(3), "bot restarted")
    assert (await repo.get_session(OTHER_GUILD, silent)).ended_at == at(50)
    assert (await repo.get_session(GUILD, finished)).end_reason == "stopped"
    assert await repo.close_dangling_sessions() == 0


async def test_set_summary_round_trip_and_validation(repo: Repository) -> None:
    """A summary and its status are stored; an unknown status or an empty 'ok' summary is refused."""
    session_id, _ = await conversation(repo)
    assert await repo.set_summary(GUILD, session_id, "We talked about Mars.", "ok")
    session = await repo.get_session(GUILD, session_id)
    assert (session.summary, session.summary_status) == ("We talked about Mars.", "ok")
    assert await repo.set_summary(GUILD, session_id, None, "unavailable")
    with pytest.raises(ValueError):
        await repo.set_summary(GUILD, session_id, "x", "done")
    with pytest.raises(ValueError):
        await repo.set_summary(GUILD, session_id, "  ", "ok")
    assert (await repo.get_session(GUILD, session_id)).summary_status == "unavailable"


# --------------------------------------------------------------------- turns


async def test_add_turn_and_get_turns_round_trip(repo: Repository) -> None:
    """Turns read back in spoken order with every field, whatever the insertion order."""
    session_id = await repo.start_session(GUILD, 5, 10, "Alex", "space", 8, started_at=T0)
    late = await repo.add_turn(GUILD, session_id, "tutor", "Mars is red.", at(2), at(3), interrupted=True)
    early = await repo.add_turn(GUILD, session_id, "child", "Why is Mars red?", at(0), at(1),
                                speaker_id=10, speaker_name="Alex", flag_reason=None)
    note = await repo.add_turn(GUILD, session_id, "system", "reconnected", at(4).timestamp(), at(4).timestamp())
    turns = await repo.get_turns(GUILD, session_id)
    assert [t.id for t in turns] == [early, late, note]
    child, tutor, system = turns
    assert (child.role, child.speaker_id, child.speaker_name, child.text) == ("child", 10, "Alex", "Why is Mars red?")
    assert (child.started_at, child.ended_at, child.interrupted, child.flagged) == (at(0), at(1), False, False)
    assert (tutor.role, tutor.speaker_id, tutor.interrupted) == ("tutor", None, True)
    assert (system.role, system.started_at, system.session_id, system.guild_id) == ("system", at(4), session_id, GUILD)


@pytest.mark.parametrize(
    ("role", "start", "end", "error"),
    [
        ("narrator", at(0), at(1), ValueError),
        ("child", at(2), at(1), ValueError),
        ("child", datetime(2026, 3, 10, 12, 0), at(1), ValueError),  # noqa: DTZ001 (naive on purpose)
    ],
)
async def test_add_turn_rejects_bad_input(
    repo: Repository, role: str, start: datetime, end: datetime, error: type[Exception],
) -> None:
    """Unknown roles, negative lengths and naive datetimes are refused before touching the file."""
    session_id = await repo.start_session(GUILD, 5, 10, "Alex", "space", 8, started_at=T0)
    with pytest.raises(error):
        await repo.add_turn(GUILD, session_id, role, "hi", start, end)
    assert await repo.get_turns(GUILD, session_id) == []


async def test_add_turn_to_unknown_session_raises_lookup_error(repo: Repository) -> None:
    """A turn for a session that does not exist (or was deleted) raises LookupError."""
    with pytest.raises(LookupError):
        await repo.add_turn(GUILD, 999, "child", "hi", at(0), at(1))


async def test_recent_turns_for_level_seeds_history(repo: Repository) -> None:
    """Last child/tutor turns of earlier sessions on the level, oldest first; flagged, system and current left out."""
    _, old = await conversation(repo, level="space", start=0, turns=4)
    await conversation(repo, level="math", start=10, turns=2)
    previous, previous_turns = await conversation(repo, level="space", start=20, turns=3)
    await repo.flag_turn(GUILD, previous_turns[1], "unsafe")
    await repo.add_turn(GUILD, previous, "system", "note", at(23), at(23))
    current, current_turns = await conversation(repo, level="space", start=40, turns=2, ended=False)
    history = await repo.recent_turns_for_level(GUILD, "space", limit=4, exclude_session_id=current)
    assert [t.id for t in history] == [old[3], *previous_turns]  # flagged ones too: bot.history decides
    assert history[2].flagged
    everything = await repo.recent_turns_for_level(GUILD, "space", limit=50)
    assert everything[-1].id == current_turns[-1] and len(everything) == 4 + 3 + 2


async def test_history_comes_only_from_sessions_a_participant_took_part_in(repo: Repository) -> None:
    """Two families in one server: each kid's history holds only sessions they (or a kid now in the call)
    started, spoke or typed in."""
    ana, ana_turns = await conversation(repo, starter=10, start=0, turns=2)
    _, ben_turns = await conversation(repo, starter=20, start=10, turns=2)
    joined = await repo.start_session(GUILD, 5, 20, "kid20", "space", 8, started_at=at(20))
    typed = await repo.add_turn(GUILD, joined, "child", "hi from Cy", at(20), at(21), speaker_ids=[30], typed=True)
    assert [t.id for t in await repo.recent_turns_for_level(GUILD, "space", participants={10})] == ana_turns
    assert [t.id for t in await repo.recent_turns_for_level(GUILD, "space", participants={20})] == [*ben_turns, typed]
    assert [t.id for t in await repo.recent_turns_for_level(GUILD, "space", participants={30})] == [typed]
    assert await repo.recent_turns_for_level(GUILD, "space", participants=set()) == []
    assert {t.session_id for t in await repo.recent_turns_for_level(GUILD, "space", participants={10, 30})} == {
        ana, joined}


async def test_flag_turn_and_flagged_turns(repo: Repository) -> None:
    """Flagging marks a turn; flagged_turns lists newest first and honours `since` and `limit`."""
    _, first = await conversation(repo, start=0, turns=2)
    _, second = await conversation(repo, start=30, turns=2)
    assert await repo.flag_turn(GUILD, first[0], "personal information")
    assert await repo.flag_turn(GUILD, second[1], "blocked by safety filter")
    assert not await repo.flag_turn(GUILD, 9999, "nothing")
    with pytest.raises(ValueError):
        await repo.flag_turn(GUILD, first[1], " ")
    flagged = await repo.flagged_turns(GUILD)
    assert [(t.id, t.flag_reason) for t in flagged] == [
        (second[1], "blocked by safety filter"), (first[0], "personal information")]
    assert [t.id for t in await repo.flagged_turns(GUILD, since=at(10))] == [second[1]]
    assert [t.id for t in await repo.flagged_turns(GUILD, limit=1)] == [second[1]]


# -------------------------------------------------------------------- delete


async def test_delete_session_removes_every_turn(repo: Repository, db: Database) -> None:
    """Deleting a session returns its turn count and leaves no orphan turn; other sessions are untouched."""
    doomed, _ = await conversation(repo, start=0, turns=4)
    kept, kept_turns = await conversation(repo, start=10, turns=2)
    assert await repo.delete_session(GUILD, doomed) == 4
    assert await repo.get_session(GUILD, doomed) is None
    assert await count(db, f"SELECT COUNT(*) FROM turns WHERE session_id = {doomed}") == 0
    assert await count(db, "SELECT COUNT(*) FROM turns WHERE session_id NOT IN (SELECT id FROM sessions)") == 0
    if db.dialect == "sqlite":
        assert await db.fetch_all("PRAGMA foreign_key_check") == []
    assert [t.id for t in await repo.get_turns(GUILD, kept)] == kept_turns
    assert await repo.delete_session(GUILD, doomed) == 0


async def test_delete_member_data_removes_their_sessions_and_words(repo: Repository, db: Database) -> None:
    """A member's own sessions go whole; in others only their turns go, the tutor's replies stay."""
    own, _ = await conversation(repo, starter=10, start=0, turns=3)
    others, other_turns = await conversation(repo, starter=20, start=10, turns=2)
    said = await repo.add_turn(GUILD, others, "child", "I live at…", at(13), at(14), speaker_id=10,
                               speaker_name="kid10")
    report = await repo.delete_member_data(GUILD, 10)
    assert (report.sessions, report.turns) == (1, 3 + 1)
    assert await repo.get_session(GUILD, own) is None
    remaining = [t.id for t in await repo.get_turns(GUILD, others)]
    assert said not in remaining and remaining == other_turns
    assert await count(db, "SELECT COUNT(*) FROM turn_speakers WHERE member_id = 10") == 0
    assert await count(db, "SELECT COUNT(*) FROM turns WHERE session_id NOT IN (SELECT id FROM sessions)") == 0


async def test_a_turn_records_every_member_who_spoke_or_typed_in_it(repo: Repository) -> None:
    """Two kids in one turn are both stored (the louder first); a typed turn records its author."""
    session_id, _ = await conversation(repo, starter=10, turns=0, ended=False)
    await repo.add_turn(GUILD, session_id, "child", "both of us", at(0), at(1), speaker_ids=[11, 12],
                        speaker_name="Ana, Ben")
    await repo.add_turn(GUILD, session_id, "child", "typed", at(1), at(2), speaker_ids=[13], typed=True,
                        speaker_name="Cy")
    shared, typed = await repo.get_turns(GUILD, session_id)
    assert (shared.speaker_ids, shared.speaker_id) == ((11, 12), 11)
    assert typed.speaker_ids == (13,)
    assert [s.id for s in await repo.list_sessions(GUILD, member_id=12)] == [session_id]
    assert [s.id for s in await repo.list_sessions(GUILD, member_id=13)] == [session_id]  # only typed in it


async def test_erasing_a_member_deletes_shared_turns_whole_and_reports_what_went(repo: Repository) -> None:
    """Ben spoke alone, together with Ana, and typed: each of those turns goes; Ana's own turn and the tutor's
    stay; the session's summary (which included Ben) is cleared to be made again; counts are reported."""
    session_id = await repo.start_session(GUILD, 5, 11, "Ana", "space", 8, started_at=at(0))
    ana = await repo.add_turn(GUILD, session_id, "child", "I like Mars", at(0), at(1), speaker_id=11,
                              speaker_name="Ana")
    tutor = await repo.add_turn(GUILD, session_id, "tutor", "Mars is red", at(1), at(2), speaker_name="Tutor")
    await repo.add_turn(GUILD, session_id, "child", "we both", at(2), at(3), speaker_ids=[11, 12],
                        speaker_name="Ana, Ben")
    await repo.add_turn(GUILD, session_id, "child", "Ben here", at(3), at(4), speaker_ids=[12], speaker_name="Ben")
    await repo.add_turn(GUILD, session_id, "child", "typed by Ben", at(4), at(5), speaker_ids=[12], typed=True,
                        speaker_name="Ben")
    await repo.end_session(GUILD, session_id, "stopped", ended_at=at(6))
    await repo.set_summary(GUILD, session_id, "- The children talked about Mars.", "ok")
    report = await repo.delete_member_data(GUILD, 12)
    assert (report.sessions, report.turns, report.summaries) == (0, 3, 1)
    assert [t.id for t in await repo.get_turns(GUILD, session_id)] == [ana, tutor]
    session = await repo.get_session(GUILD, session_id)
    assert session.summary is None and session.summary_status == "pending"
    assert await repo.list_sessions(GUILD, member_id=12) == []


async def test_erasing_a_member_takes_their_name_out_of_the_words_that_stay(repo: Repository) -> None:
    """The tutor and the other kids said Ben's name (his chosen name "Benny" and his display name "Max"):
    those words stay in Ana's session, the name goes. A lower-case "max" is a word, not his name; another
    family's session he never spoke in is not touched."""
    session_id = await repo.start_session(GUILD, 5, 11, "Ana", "space", 8, started_at=at(0))
    await repo.set_member_name(GUILD, 12, "Benny", set_by=12)
    await repo.add_turn(GUILD, session_id, "child", "rockets go max speed", at(0), at(1), speaker_id=12,
                        speaker_name="Benny")
    tutor = await repo.add_turn(GUILD, session_id, "tutor", "Great job, Benny! And Max, is max speed fast?",
                                at(1), at(2), speaker_name="Tutor")
    ana = await repo.add_turn(GUILD, session_id, "child", "Benny's rocket is faster than max", at(2), at(3),
                              speaker_id=11, speaker_name="Ana")
    await repo.end_session(GUILD, session_id, "stopped", ended_at=at(4))
    other = await repo.start_session(GUILD, 5, 20, "Zed", "space", 8, started_at=at(5))
    untouched = await repo.add_turn(GUILD, other, "tutor", "Hello Max", at(5), at(6), speaker_name="Tutor")
    await repo.end_session(GUILD, other, "stopped", ended_at=at(7))
    report = await repo.delete_member_data(GUILD, 12, names=["Max", "ben_2015"])
    assert (report.turns, report.mentions) == (1, 2)
    assert [(t.id, t.text) for t in await repo.get_turns(GUILD, session_id)] == [
        (tutor, "Great job, (name removed)! And (name removed), is max speed fast?"),
        (ana, "(name removed)'s rocket is faster than max")]
    assert [(t.id, t.text) for t in await repo.get_turns(GUILD, other)] == [(untouched, "Hello Max")]
    assert await repo.member_names(GUILD) == {}


async def test_erasing_a_member_takes_the_tool_calls_that_may_quote_them(repo: Repository) -> None:
    """An alert_grown_up reason is "what the child said": the one stored with Ben's turn goes, and so does one
    stored with no turn (its prompt was never transcribed, so it may be Ben's words) in a session Ben spoke in.
    The alert about Ana's own turn and the budget stop (no child's words) stay."""
    session_id = await repo.start_session(GUILD, 5, 11, "Ana", "space", 8, started_at=at(0))
    ana = await repo.add_turn(GUILD, session_id, "child", "I live at 3 Oak Road", at(0), at(1), speaker_id=11,
                              speaker_name="Ana")
    ben = await repo.add_turn(GUILD, session_id, "child", "my dad hits me", at(1), at(2), speaker_id=12,
                              speaker_name="Ben")
    await repo.add_event(GUILD, session_id, "tool_call", "alert_grown_up", turn_id=ana, category="personal_details",
                         reason="A child said their address.")
    await repo.add_event(GUILD, session_id, "tool_call", "alert_grown_up", turn_id=ben, category="hurt",
                         reason="A child said their dad hits them.")
    await repo.add_event(GUILD, session_id, "tool_call", "alert_grown_up", category="scared",
                         reason="A child said they are scared of the dark at home.")
    await repo.add_event(GUILD, session_id, "budget_stop", "daily_budget", reason="the daily budget is spent")
    await repo.end_session(GUILD, session_id, "stopped", ended_at=at(3))
    report = await repo.delete_member_data(GUILD, 12)
    assert (report.turns, report.events) == (1, 2)
    left = await repo.session_events(GUILD, session_id)
    assert [(e.name, e.turn_id) for e in left] == [("alert_grown_up", ana), ("daily_budget", None)]
    assert not any("hits" in e.reason or "scared" in e.reason for e in left)


async def test_erasing_a_member_marks_the_alert_posts_quoting_them(repo: Repository) -> None:
    """The bot's posts in the alerts channel quote what was said: those about Ben's turn, about an alert stored
    with no turn in a session he spoke in, the summary of that session and every post of the session he started
    become stale (to delete from Discord). Posts about Ana's own turn and about a running session stay."""
    shared = await repo.start_session(GUILD, 5, 11, "Ana", "space", 8, started_at=at(0))
    ana = await repo.add_turn(GUILD, shared, "child", "I live at 3 Oak Road", at(0), at(1), speaker_id=11,
                              speaker_name="Ana", flag_reason="alert: personal_details")
    ben = await repo.add_turn(GUILD, shared, "child", "my dad hits me", at(1), at(2), speaker_id=12,
                              speaker_name="Ben", flag_reason="alert: hurt")
    loose = await repo.add_event(GUILD, shared, "tool_call", "alert_grown_up", category="scared", reason="scared")
    await repo.end_session(GUILD, shared, "stopped", ended_at=at(3))
    his, _ = await conversation(repo, starter=12, start=10, turns=2)
    running, running_turns = await conversation(repo, starter=13, start=20, turns=2, ended=False)
    await repo.add_turn(GUILD, running, "child", "Ben again", at(22), at(23), speaker_id=12, speaker_name="Ben")
    keep = [await repo.add_alert_post(GUILD, shared, 77, 1001, "flagged", turn_id=ana),
            await repo.add_alert_post(GUILD, running, 77, 1002, "flagged", turn_id=running_turns[0]),
            await repo.add_alert_post(GUILD, running, 77, 1003, "summary")]
    gone = [await repo.add_alert_post(GUILD, shared, 77, 2001, "flagged", turn_id=ben),
            await repo.add_alert_post(GUILD, shared, 77, 2002, "alert", event_id=loose),
            await repo.add_alert_post(GUILD, shared, 77, 2003, "summary"),
            await repo.add_alert_post(GUILD, his, 77, 2004, "summary")]
    other = await repo.start_session(OTHER_GUILD, 5, 12, "Ben", "space", 8, started_at=at(0))
    await repo.end_session(OTHER_GUILD, other, "stopped", ended_at=at(1))
    await repo.add_alert_post(OTHER_GUILD, other, 88, 3001, "summary")
    assert await repo.stale_alert_posts(GUILD) == [] and await repo.guilds_with_stale_posts() == []
    report = await repo.delete_member_data(GUILD, 12)
    assert report.posts == 4
    stale = await repo.stale_alert_posts(GUILD)
    assert [p.id for p in stale] == gone and [p.message_id for p in stale] == [2001, 2002, 2003, 2004]
    assert {p.channel_id for p in stale} == {77} and not set(keep) & {p.id for p in stale}
    assert await repo.guilds_with_stale_posts() == [GUILD]
    assert await repo.forget_alert_posts(GUILD, gone[:2]) == 2
    assert [p.id for p in await repo.stale_alert_posts(GUILD)] == gone[2:]


async def test_deleting_or_purging_a_session_marks_its_alert_posts(repo: Repository) -> None:
    """A deleted session's posts and an expired one's become stale with it; a post sent while its session was
    being deleted is stored stale at once (it is deleted too)."""
    deleted, turns = await conversation(repo, starter=10, start=0, turns=2)
    expired, _ = await conversation(repo, starter=10, start=-60 * 24 * 40, turns=2)
    kept, _ = await conversation(repo, starter=10, start=10, turns=2)
    first = await repo.add_alert_post(GUILD, deleted, 77, 1, "flagged", turn_id=turns[0])
    old = await repo.add_alert_post(GUILD, expired, 77, 2, "summary")
    await repo.add_alert_post(GUILD, kept, 77, 3, "summary")
    await repo.delete_session(GUILD, deleted)
    await repo.purge_all_expired(T0 + timedelta(days=1))
    late = await repo.add_alert_post(GUILD, deleted, 77, 4, "summary")
    gone_turn = await repo.add_alert_post(GUILD, kept, 77, 5, "flagged", turn_id=turns[1])
    assert [p.id for p in await repo.stale_alert_posts(GUILD)] == [first, old, late, gone_turn]
    assert await repo.add_alert_post(GUILD, kept, 77, 3, "summary") == 0  # the same message once


async def test_erasing_a_member_takes_their_name_out_of_old_labels(repo: Repository, db: Database) -> None:
    """A row from before speakers were stored per member names Ben only in its label: the label loses
    "Ben" (the name he goes by now, or the one he was recorded under), Ana's words stay."""
    session_id = await repo.start_session(GUILD, 5, 11, "Ana", "space", 8, started_at=at(0))
    old = await repo.add_turn(GUILD, session_id, "child", "we both", at(0), at(1), speaker_id=11,
                              speaker_name="Ana, Ben")
    await repo.end_session(GUILD, session_id, "stopped", ended_at=at(2))
    report = await repo.delete_member_data(GUILD, 12, names=["Ben"])
    assert (report.turns, report.labels) == (0, 1)
    (turn,) = await repo.get_turns(GUILD, session_id)
    assert (turn.id, turn.speaker_name, turn.text) == (old, "Ana", "we both")


async def test_erasing_leaves_a_running_session_alone(repo: Repository) -> None:
    """The caller refuses while the member is in a running conversation; the repository never cuts into one."""
    running, turns = await conversation(repo, starter=10, turns=2, ended=False)
    report = await repo.delete_member_data(GUILD, 10)
    assert (report.sessions, report.turns) == (0, 0)
    assert [t.id for t in await repo.get_turns(GUILD, running)] == turns


async def test_purge_respects_each_guilds_retention(repo: Repository) -> None:
    """purge_all_expired uses retention_days per guild (30 without settings) and never purges running sessions."""
    now = T0 + timedelta(days=100)
    await repo.update_settings(GUILD, retention_days=7)
    ten_days = 100 * 24 * 60 - 10 * 24 * 60  # minutes after T0 that are ten days before `now`
    short_gone, _ = await conversation(repo, GUILD, start=ten_days, turns=2)
    default_kept, _ = await conversation(repo, OTHER_GUILD, start=ten_days, turns=2)
    default_gone, _ = await conversation(repo, OTHER_GUILD, start=ten_days - 40 * 24 * 60, turns=3)
    running, _ = await conversation(repo, GUILD, start=0, turns=1, ended=False)
    assert await repo.purge_all_expired(now=now) == {GUILD: (1, 2), OTHER_GUILD: (1, 3)}
    assert await repo.get_session(GUILD, short_gone) is None
    assert await repo.get_session(OTHER_GUILD, default_gone) is None
    assert await repo.get_session(OTHER_GUILD, default_kept) is not None
    assert await repo.get_session(GUILD, running) is not None
    assert await repo.purge_all_expired(now=now) == {}


async def test_purge_older_than_only_touches_its_guild(repo: Repository) -> None:
    """purge_older_than(guild, 0) empties that guild's ended sessions and nothing else."""
    await conversation(repo, GUILD)
    other, _ = await conversation(repo, OTHER_GUILD)
    assert await repo.purge_older_than(GUILD, 0, now=at(60)) == (1, 2)
    assert await repo.get_session(OTHER_GUILD, other) is not None
    with pytest.raises(ValueError):
        await repo.purge_older_than(GUILD, -1)


# ------------------------------------------------------------------ settings


async def test_settings_default_then_update_round_trip(repo: Repository) -> None:
    """Without a row the defaults apply; updates persist, ids can be cleared with None."""
    assert await repo.get_settings(GUILD) == GuildSettings(guild_id=GUILD)
    updated = await repo.update_settings(GUILD, daily_minutes=90, moderator_role_id=555, alerts_channel_id=666)
    assert (updated.daily_minutes, updated.moderator_role_id, updated.alerts_channel_id) == (90, 555, 666)
    assert (updated.max_session_minutes, updated.retention_days) == (30, 30) and updated.updated_at is not None
    await repo.update_settings(GUILD, alerts_channel_id=None, retention_days=365)
    settings = await repo.get_settings(GUILD)
    assert (settings.daily_minutes, settings.alerts_channel_id, settings.retention_days) == (90, None, 365)
    assert await repo.get_settings(OTHER_GUILD) == GuildSettings(guild_id=OTHER_GUILD)


@pytest.mark.parametrize(
    "fields",
    [
        {"updated_at": 5},
        {"colour": "blue"},
        {"daily_minutes": 0},
        {"daily_minutes": 1441},
        {"max_session_minutes": 241},
        {"retention_days": 0},
        {"retention_days": 366},
        {"retention_days": True},
        {"daily_minutes": "60"},
        {"starter_role_id": -1},
        {"daily_minutes": 30, "retention_days": 400},  # one bad field spoils the whole call
        {},
    ],
)
async def test_update_settings_rejects_bad_fields_and_changes_nothing(repo: Repository, fields: dict) -> None:
    """Unknown names, out-of-range or wrongly typed values raise ValueError and leave the row as it was."""
    before = await repo.update_settings(GUILD, daily_minutes=45)
    with pytest.raises(ValueError):
        await repo.update_settings(GUILD, **fields)
    assert await repo.get_settings(GUILD) == before


# ------------------------------------------------------------- custom levels


async def test_custom_levels_add_list_remove(repo: Repository) -> None:
    """Levels are per guild, unique by case-insensitive name, listed by name and removable."""
    assert await repo.add_custom_level(GUILD, "Volcanoes", "How mountains erupt", 10)
    assert await repo.add_custom_level(GUILD, " Bees ", "Pollination", 10)
    assert not await repo.add_custom_level(GUILD, "volcanoes", "again", 11)
    assert await repo.add_custom_level(OTHER_GUILD, "Volcanoes", "theirs", 12)
    levels = await repo.list_custom_levels(GUILD)
    assert [(lv.name, lv.description, lv.created_by) for lv in levels] == [
        ("Bees", "Pollination", 10), ("Volcanoes", "How mountains erupt", 10)]
    assert levels[0].created_at.tzinfo is not None
    assert await repo.remove_custom_level(GUILD, "VOLCANOES")
    assert not await repo.remove_custom_level(GUILD, "volcanoes")
    assert [lv.name for lv in await repo.list_custom_levels(OTHER_GUILD)] == ["Volcanoes"]
    with pytest.raises(ValueError):
        await repo.add_custom_level(GUILD, "  ", "blank", 10)


# ----------------------------------------------------------- guild isolation


async def test_other_guild_cannot_read_or_change_a_session(repo: Repository) -> None:
    """Guild B gets None/empty/False/0 for everything of guild A's, and guild A's data is unchanged."""
    session_id, turn_ids = await conversation(repo, GUILD, ended=False)
    assert await repo.get_session(OTHER_GUILD, session_id) is None
    assert await repo.get_turns(OTHER_GUILD, session_id) == []
    assert await repo.list_sessions(OTHER_GUILD) == []
    assert await repo.search_sessions(OTHER_GUILD, str(session_id)) == []
    assert await repo.search_sessions(OTHER_GUILD, "") == []
    assert await repo.recent_turns_for_level(OTHER_GUILD, "space") == []
    assert not await repo.flag_turn(OTHER_GUILD, turn_ids[0], "hijack")
    assert await repo.flagged_turns(OTHER_GUILD) == []
    assert not await repo.set_summary(OTHER_GUILD, session_id, "hijacked", "ok")
    assert not await repo.set_resumption_handle(OTHER_GUILD, session_id, "stolen")
    assert not await repo.end_session(OTHER_GUILD, session_id, "hijack")
    assert await repo.delete_session(OTHER_GUILD, session_id) == 0
    assert (await repo.delete_member_data(OTHER_GUILD, 10)).turns == 0
    assert await repo.purge_older_than(OTHER_GUILD, 0, now=at(10_000)) == (0, 0)
    with pytest.raises(LookupError):
        await repo.add_turn(OTHER_GUILD, session_id, "child", "sneaky", at(5), at(6))
    session = await repo.get_session(GUILD, session_id)
    assert session.is_running and session.summary is None and session.resumption_handle is None
    assert [(t.id, t.flag_reason) for t in await repo.get_turns(GUILD, session_id)] == [(i, None) for i in turn_ids]


async def test_schema_refuses_a_turn_in_another_guilds_session(repo: Repository, db: Database) -> None:
    """Even raw SQL cannot attach a turn to a session of a different guild (composite foreign key)."""
    session_id, _ = await conversation(repo, GUILD)
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
        await db.write(lambda conn: conn.execute(
            "INSERT INTO turns (session_id, guild_id, role, text, started_at, ended_at) "
            "VALUES (?, ?, 'child', 'x', 0, 0)", (session_id, OTHER_GUILD)))


# ------------------------------------------- structural: no query without guild_id

SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)
TOUCHES_TRANSCRIPTS = re.compile(r"\b(sessions|turns|turn_speakers|turn_usage|session_events)\b", re.IGNORECASE)
GUILD_SCOPED = re.compile(
    r"\bguild_id\s*=\s*:guild_id\b"  # WHERE/ON ... guild_id = :guild_id
    r"|INSERT\s+INTO\s+\w+\s*\([^)]*\bguild_id\b[^)]*\)\s*VALUES\s*\([^)]*:guild_id\b",  # inserts carry it
    re.IGNORECASE,
)


def repository_source() -> str:
    """The source of every module that defines part of Repository (its query areas)."""
    files = {inspect.getsourcefile(cls) for cls in Repository.__mro__ if cls is not object}
    return "\n".join(Path(f).read_text() for f in sorted(files))


def repository_sql(source: str) -> list[tuple[str, str]]:
    """(method, SQL) for every SQL string literal in any class's methods (no docstrings); f-string holes: {}."""
    tree = ast.parse(source)
    found: list[tuple[str, str]] = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for method in (n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
            nodes = list(ast.walk(method))
            docstring = method.body[0].value if isinstance(method.body[0], ast.Expr) else None
            parts_of_fstrings = {id(v) for n in nodes if isinstance(n, ast.JoinedStr) for v in n.values}
            for node in nodes:
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node is not docstring \
                        and id(node) not in parts_of_fstrings:
                    text = node.value
                elif isinstance(node, ast.JoinedStr):
                    text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
                else:
                    continue
                if SQL_START.match(text):
                    found.append((method.name, text))
    return found


def unscoped(statements: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, sql) for name, sql in statements
            if TOUCHES_TRANSCRIPTS.search(sql) and not GUILD_SCOPED.search(sql) and name not in CROSS_GUILD_QUERIES]


def test_every_transcript_statement_is_scoped_by_guild() -> None:
    """Every SQL literal in Repository that touches sessions or turns binds guild_id (listed exceptions aside)."""
    statements = repository_sql(repository_source())
    touching = [s for s in statements if TOUCHES_TRANSCRIPTS.search(s[1])]
    assert len(touching) >= 15, "the scanner should see the repository's SQL; did the code shape change?"
    assert unscoped(statements) == []


def test_cross_guild_exceptions_are_real_and_few() -> None:
    """Each listed exception exists and really is unscoped, so the list cannot silently go stale."""
    statements = repository_sql(repository_source())
    for name in CROSS_GUILD_QUERIES:
        sql = [text for method, text in statements if method == name]
        assert sql and not all(GUILD_SCOPED.search(text) for text in sql), name
    assert len(CROSS_GUILD_QUERIES) == 4  # adding one is a deliberate, reviewed change


def test_scope_checker_catches_a_leaky_query() -> None:
    """The scanner flags queries that filter by something other than the caller's guild."""
    leaky = '''
class Repository:
    async def leak(self, session_id):
        await self._db.fetch_all("SELECT * FROM turns WHERE session_id = :session_id", {})
    async def sneaky(self, guild_id):
        await self._db.fetch_all(f"SELECT * FROM sessions s WHERE s.guild_id IS NOT NULL AND {x}", {})
    async def fine(self, guild_id):
        await self._db.fetch_all("SELECT * FROM turns WHERE guild_id = :guild_id", {})
'''
    assert [name for name, _ in unscoped(repository_sql(leaky))] == ["leak", "sneaky"]


def test_public_methods_take_guild_id_first() -> None:
    """Every public Repository method except the listed cross-guild ones takes guild_id as its first argument."""
    cross_guild_public = {"close_dangling_sessions", "purge_all_expired", "pending_summaries",
                          "guilds_with_stale_posts"}
    for name, method in inspect.getmembers(Repository, inspect.iscoroutinefunction):
        if name.startswith("_") or name in cross_guild_public:
            continue
        first = list(inspect.signature(method).parameters)[1]
        assert first == "guild_id", name


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # SQLite's trace shows the bound values
async def test_executed_statements_all_carry_the_guild(repo: Repository, db: Database) -> None:
    """Tracing SQLite while every guild-scoped method runs: each statement on sessions/turns names the guild."""
    guild = 777_777
    executed: list[str] = []
    await db.set_trace_callback(executed.append)
    session_id = await repo.start_session(guild, 5, 10, "Alex", "space", 8, started_at=T0)
    turn_id = await repo.add_turn(guild, session_id, "child", "hi", at(0), at(1), speaker_id=10)
    calls = {
        "get_session": repo.get_session(guild, session_id),
        "list_sessions": repo.list_sessions(guild, member_id=10, level="space", since=T0),
        "search_sessions": repo.search_sessions(guild, "kid"),
        "minutes_used_today": repo.minutes_used_today(guild, now=at(5)),
        "get_turns": repo.get_turns(guild, session_id),
        "recent_turns_for_level": repo.recent_turns_for_level(guild, "space", exclude_session_id=1),
        "flag_turn": repo.flag_turn(guild, turn_id, "check"),
        "flagged_turns": repo.flagged_turns(guild, since=T0),
        "set_summary": repo.set_summary(guild, session_id, "ok", "ok"),
        "set_resumption_handle": repo.set_resumption_handle(guild, session_id, "h"),
        "end_session": repo.end_session(guild, session_id, "stopped", ended_at=at(2)),
        "get_settings": repo.get_settings(guild),
        "update_settings": repo.update_settings(guild, daily_minutes=20),
        "add_custom_level": repo.add_custom_level(guild, "Bees", "d", 10),
        "list_custom_levels": repo.list_custom_levels(guild),
        "remove_custom_level": repo.remove_custom_level(guild, "Bees"),
        "add_usage": repo.add_usage(guild, session_id, TokenCounts(audio_in=10), 0.001, turn_id=turn_id),
        "session_usage": repo.session_usage(guild, session_id),
        "usage_today": repo.usage_today(guild, now=at(5)),
        "add_event": repo.add_event(guild, session_id, "tool_call", "alert_grown_up", turn_id=turn_id, call_id="c1"),
        "set_event_outcome": repo.set_event_outcome(guild, session_id, "c1", "cancelled"),
        "session_events": repo.session_events(guild, session_id),
        "set_member_name": repo.set_member_name(guild, 10, "Ana", set_by=10),
        "member_names": repo.member_names(guild),
        "clear_member_name": repo.clear_member_name(guild, 10),
        "add_alert_post": repo.add_alert_post(guild, session_id, 5, 6, "flagged", turn_id=turn_id, event_id=1),
        "stale_alert_posts": repo.stale_alert_posts(guild),
        "forget_alert_posts": repo.forget_alert_posts(guild, [1]),
        "delete_member_data": repo.delete_member_data(guild, 99),
        "purge_older_than": repo.purge_older_than(guild, 1, now=at(10)),
        "delete_session": repo.delete_session(guild, session_id),
    }
    for call in calls.values():
        await call
    await db.set_trace_callback(None)
    public = {n for n, _ in inspect.getmembers(Repository, inspect.iscoroutinefunction) if not n.startswith("_")}
    cross_guild = {"close_dangling_sessions", "purge_all_expired", "pending_summaries", "guilds_with_stale_posts"}
    assert public - cross_guild == set(calls) | {"start_session", "add_turn"}
    data_statements = [s for s in executed if SQL_START.match(s) and TOUCHES_TRANSCRIPTS.search(s)]
    assert len(data_statements) >= 20
    for statement in data_statements:
        if statement.lstrip().upper().startswith("INSERT"):
            assert f"{guild}" in statement, statement
        else:
            assert re.search(rf"\bguild_id\s*=\s*{guild}\b", statement), statement


def repaired(text: str) -> str:
    """The test's own model of the repair: a high+low surrogate pair is one character; any other surrogate,
    and NUL (PostgreSQL refuses it), becomes U+FFFD."""
    out, i = [], 0
    while i < len(text):
        code = ord(text[i])
        if 0xD800 <= code <= 0xDBFF and i + 1 < len(text) and 0xDC00 <= ord(text[i + 1]) <= 0xDFFF:
            out.append(chr(0x10000 + ((code - 0xD800) << 10) + ord(text[i + 1]) - 0xDC00))
            i += 2
            continue
        out.append("\ufffd" if 0xD800 <= code <= 0xDFFF or code == 0 else text[i])
        i += 1
    return "".join(out)


async def test_any_unicode_is_stored_and_read_back(repo: Repository) -> None:
    """Fuzz: arbitrary code points from every plane (lone surrogates, NUL, controls, non-characters) are stored
    in turns, names and summaries; what comes back is valid text that differs only where repair was needed."""
    import random

    rng = random.Random(11)
    session_id = await repo.start_session(GUILD, 5, 10, "Alex", "space", 8, started_at=T0)
    planes = [(0, 0x7F), (0x80, 0xFFFF), (0xD800, 0xDBFF), (0xDC00, 0xDFFF), (0x10000, 0x10FFFF)]
    texts = []
    for i in range(200):
        text = "".join(chr(rng.randint(*rng.choice(planes))) for _ in range(rng.randint(0, 40)))
        texts.append(text)
        await repo.add_turn(GUILD, session_id, "child", text, at(i), at(i), speaker_name=text[:10])
    turns = await repo.get_turns(GUILD, session_id)
    assert [t.text for t in turns] == [repaired(text) for text in texts]
    assert [t.speaker_name for t in turns] == [repaired(text[:10]) for text in texts]
    weird = "Sum\ud800mary\x00"
    await repo.end_session(GUILD, session_id, "stopped", ended_at=at(300))
    assert await repo.set_summary(GUILD, session_id, weird, "ok")
    assert (await repo.get_session(GUILD, session_id)).summary == "Sum\ufffdmary\ufffd"
    other = await repo.start_session(GUILD, 5, 11, "Kid\udfff", "space", 8, started_at=T0)
    assert (await repo.get_session(GUILD, other)).starter_name == "Kid\ufffd"
    # The tutor's tool calls carry the model's words too: an alert must never be lost over one character.
    for i, text in enumerate(texts[:50]):
        await repo.add_event(GUILD, other, "tool_call", "alert_grown_up", call_id=f"c{i}{text[:4]}",
                             category=text[:6], reason=text, outcome=text[6:12])
    assert await repo.set_event_outcome(GUILD, other, f"c0{texts[0][:4]}", texts[1])
    events = await repo.session_events(GUILD, other)
    assert [(e.call_id, e.category, e.reason, e.outcome) for e in events] == [
        (repaired(f"c{i}{t[:4]}"), repaired(t[:6]), repaired(t), repaired(texts[1] if i == 0 else t[6:12]))
        for i, t in enumerate(texts[:50])]
    assert await repo.add_custom_level(GUILD, "bees", "all about \ud83d bees\x00", 10, title="B\udc00ees")
    [level] = await repo.list_custom_levels(GUILD)
    assert (level.description, level.title) == ("all about \ufffd bees\ufffd", "B\ufffdees")

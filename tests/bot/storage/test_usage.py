"""bot.storage.queries.usage: usage snapshots summed per session and per server per day, and session events
(tool calls, budget stops) tied to their turns — on both backends (SQLite file, PostgreSQL), inside their guild."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import bot.storage.db as db_module
from bot.cost import Prices, TokenCounts
from bot.storage.db import Database
from bot.storage.repository import Repository
from tests.conftest import database_location

GUILD, OTHER = 100, 200
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def repository(database: Database) -> Repository:
    """Each test runs on SQLite and on PostgreSQL (tests/conftest.py)."""
    return Repository(database)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def session_with_turns(repo: Repository, guild: int = GUILD, start: float = 0) -> tuple[int, int, int]:
    """A session with a child turn (speaker 10) and a tutor turn; returns (session, child turn, tutor turn)."""
    session_id = await repo.start_session(guild, 5, 10, "Ana", "space", 8, started_at=at(start))
    child = await repo.add_turn(guild, session_id, "child", "I live at 12 Elm Street", at(start), at(start + 0.1),
                                speaker_id=10, speaker_name="Ana")
    tutor = await repo.add_turn(guild, session_id, "tutor", "Let's keep that private!", at(start + 0.1),
                                at(start + 0.2))
    return session_id, child, tutor


SNAPSHOT = TokenCounts(text_in=700, audio_in=600, audio_out=450, thoughts=136)


async def test_session_usage_is_the_sum_of_its_snapshots(repository: Repository):
    """Every snapshot is kept; the session's bill is their sum, in tokens by kind and in dollars."""
    session_id, _, tutor = await session_with_turns(repository)
    cost = SNAPSHOT.cost(Prices())
    for minute in (1, 2, 3):
        await repository.add_usage(GUILD, session_id, SNAPSHOT, cost, total_tokens=1886, turn_id=tutor, at=at(minute))
    totals = await repository.session_usage(GUILD, session_id)
    assert totals.snapshots == 3 and totals.tokens == SNAPSHOT + SNAPSHOT + SNAPSHOT
    assert totals.total_tokens == 3 * 1886 and totals.cost_usd == pytest.approx(3 * cost)
    other = await repository.session_usage(OTHER, session_id)
    assert other.snapshots == 0 and other.cost_usd == 0


async def test_usage_today_sums_the_servers_sessions_since_midnight(repository: Repository):
    """Per server per day: every session of the guild today counts, yesterday's and other guilds' do not."""
    first, _, _ = await session_with_turns(repository, start=0)
    second, _, _ = await session_with_turns(repository, start=30)
    yesterday, _, _ = await session_with_turns(repository, start=-24 * 60)
    theirs, _, _ = await session_with_turns(repository, OTHER)
    await repository.add_usage(GUILD, first, TokenCounts(audio_in=1000), 0.25, at=at(1))
    await repository.add_usage(GUILD, second, TokenCounts(audio_out=500), 0.50, at=at(31))
    await repository.add_usage(GUILD, yesterday, TokenCounts(audio_in=9), 4.00, at=at(-24 * 60 + 1))
    await repository.add_usage(OTHER, theirs, TokenCounts(audio_in=9), 8.00, at=at(1))
    today = await repository.usage_today(GUILD, now=at(40))
    assert today.cost_usd == pytest.approx(0.75) and today.tokens == TokenCounts(audio_in=1000, audio_out=500)
    assert today.total_tokens == 1500 and today.snapshots == 2


async def test_the_days_spend_follows_the_servers_time_zone(repository: Repository):
    """The budget's day is the server's: at 08:00 in New York, spend from 23:30 there last night is yesterday's
    (though it is today in UTC), and spend from 01:00 there is today's."""
    session_id, _, _ = await session_with_turns(repository)
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 08:00 EDT
    last_night, early_today = datetime(2026, 3, 10, 3, 30, tzinfo=UTC), datetime(2026, 3, 10, 5, 0, tzinfo=UTC)
    await repository.add_usage(GUILD, session_id, TokenCounts(audio_in=10), 1.00, at=last_night)
    await repository.add_usage(GUILD, session_id, TokenCounts(audio_in=20), 0.25, at=early_today)
    new_york = await repository.usage_today(GUILD, now=now, time_zone="America/New_York")
    utc = await repository.usage_today(GUILD, now=now)
    assert new_york.cost_usd == pytest.approx(0.25) and new_york.tokens == TokenCounts(audio_in=20)
    assert utc.cost_usd == pytest.approx(1.25)


async def test_sessions_list_shows_cost_and_tokens(repository: Repository):
    """`/transcripts list` reads each session's dollars and tokens from the same snapshots."""
    session_id, _, _ = await session_with_turns(repository)
    await repository.add_usage(GUILD, session_id, TokenCounts(audio_in=100), 0.3, total_tokens=120)
    await repository.add_usage(GUILD, session_id, TokenCounts(audio_in=100), 0.2)
    empty, _, _ = await session_with_turns(repository, start=5)
    rows = {row.id: row for row in await repository.list_sessions(GUILD)}
    assert rows[session_id].cost_usd == pytest.approx(0.5) and rows[session_id].total_tokens == 220
    assert rows[empty].cost_usd == 0 and rows[empty].total_tokens == 0


async def test_usage_of_another_guilds_session_is_refused(repository: Repository):
    """A snapshot cannot be attached to a session of another server; negative usage is refused."""
    session_id, _, _ = await session_with_turns(repository, OTHER)
    with pytest.raises(LookupError):
        await repository.add_usage(GUILD, session_id, TokenCounts(audio_in=1), 0.1)
    with pytest.raises(ValueError):
        await repository.add_usage(OTHER, session_id, TokenCounts(audio_in=-1), 0.1)
    assert (await repository.session_usage(OTHER, session_id)).snapshots == 0


async def test_events_are_stored_with_their_turn(repository: Repository):
    """A tool call keeps the turn it belongs to, its reason and what was done; the outcome can be updated."""
    session_id, child, _ = await session_with_turns(repository)
    await repository.add_event(GUILD, session_id, "tool_call", "alert_grown_up", turn_id=child, call_id="call-1",
                               category="personal_details", reason="The child said their home address.",
                               outcome="moderators alerted", at=at(0.15))
    await repository.add_event(GUILD, session_id, "budget_stop", "daily_budget", reason="$5.02 of $5.00",
                               outcome="goodbye, then stopped", at=at(0.3))
    assert await repository.set_event_outcome(GUILD, session_id, "call-1", "moderators alerted; then cancelled")
    assert not await repository.set_event_outcome(OTHER, session_id, "call-1", "x")
    events = await repository.session_events(GUILD, session_id)
    assert [(e.kind, e.name, e.turn_id, e.category) for e in events] == [
        ("tool_call", "alert_grown_up", child, "personal_details"), ("budget_stop", "daily_budget", None, None)]
    assert events[0].outcome == "moderators alerted; then cancelled" and events[0].at == at(0.15)
    assert await repository.session_events(OTHER, session_id) == []


async def test_an_event_cannot_point_at_another_sessions_turn(repository: Repository):
    """A turn id from elsewhere is stored as no turn rather than linking across sessions."""
    session_id, _, _ = await session_with_turns(repository)
    _, elsewhere, _ = await session_with_turns(repository, start=10)
    await repository.add_event(GUILD, session_id, "tool_call", "end_conversation", turn_id=elsewhere)
    await repository.add_usage(GUILD, session_id, TokenCounts(audio_in=1), 0.1, turn_id=elsewhere)
    assert [e.turn_id for e in await repository.session_events(GUILD, session_id)] == [None]


@pytest.mark.parametrize(("kind", "name"), [("flag", "x"), ("tool_call", "  ")])
async def test_bad_events_are_refused(repository: Repository, kind: str, name: str):
    """An unknown kind or an empty name is a bug, refused before anything is written."""
    session_id, _, _ = await session_with_turns(repository)
    with pytest.raises(ValueError):
        await repository.add_event(GUILD, session_id, kind, name)
    assert await repository.session_events(GUILD, session_id) == []


async def test_erasing_a_member_removes_alerts_about_their_words_but_keeps_the_bill(repository: Repository):
    """An alert quotes the child, so it goes with their turn; the usage row only loses its link to the turn."""
    session_id = await repository.start_session(GUILD, 5, 99, "Starter", "space", 8, started_at=at(0))
    child = await repository.add_turn(GUILD, session_id, "child", "my phone is 555", at(0), at(0.1), speaker_id=10)
    await repository.add_event(GUILD, session_id, "tool_call", "alert_grown_up", turn_id=child, reason="phone")
    await repository.add_event(GUILD, session_id, "budget_stop", "daily_budget")
    await repository.add_usage(GUILD, session_id, TokenCounts(audio_in=50), 0.4, turn_id=child)
    await repository.end_session(GUILD, session_id, "stopped")  # erasure never cuts into a running session
    await repository.delete_member_data(GUILD, 10)
    assert [e.name for e in await repository.session_events(GUILD, session_id)] == ["daily_budget"]
    assert (await repository.session_usage(GUILD, session_id)).cost_usd == pytest.approx(0.4)


async def test_deleting_a_session_deletes_its_usage_and_events(repository: Repository):
    """Deleting means deleting: nothing of the session is left."""
    session_id, child, _ = await session_with_turns(repository)
    await repository.end_session(GUILD, session_id, "stopped", ended_at=at(1))
    await repository.add_event(GUILD, session_id, "tool_call", "alert_grown_up", turn_id=child)
    await repository.add_usage(GUILD, session_id, TokenCounts(audio_in=50), 0.4)
    await repository.delete_session(GUILD, session_id)
    assert await repository.session_events(GUILD, session_id) == []
    assert (await repository.session_usage(GUILD, session_id)).snapshots == 0


async def test_daily_budget_setting(repository: Repository):
    """$5.00 a day unless changed; $0.10 to $1,000 accepted, anything else refused with nothing changed."""
    settings = await repository.get_settings(GUILD)
    assert settings.daily_budget_cents == 500 and settings.daily_budget_usd == 5.0
    assert (await repository.update_settings(GUILD, daily_budget_cents=250)).daily_budget_usd == 2.5
    for bad in (9, 100_001, 2.5, True):
        with pytest.raises(ValueError):
            await repository.update_settings(GUILD, daily_budget_cents=bad)
    assert (await repository.get_settings(GUILD)).daily_budget_cents == 250


async def test_a_version_1_database_migrates_and_keeps_its_rows(backend, request, tmp_path, monkeypatch):
    """A database made before cost tracking gains the tables and the default budget; its sessions stay."""
    location = await database_location(backend, request, tmp_path)
    monkeypatch.setattr(db_module, "MIGRATIONS", db_module.MIGRATIONS[:1])
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", 1)
    old = await Database.open(location)
    await old.write(lambda tx: tx.execute(
        "INSERT INTO guild_settings (guild_id, daily_minutes, updated_at) VALUES (?, 45, 0)", (GUILD,)))
    await old.write(lambda tx: tx.execute(
        "INSERT INTO sessions (guild_id, channel_id, starter_id, starter_name, level, age, started_at) "
        "VALUES (?, 1, 2, 'Ana', 'space', 8, 0)", (GUILD,)))
    await old.close()
    monkeypatch.undo()
    db = await Database.open(location)
    try:
        repo = Repository(db)
        settings = await repo.get_settings(GUILD)
        assert (settings.daily_minutes, settings.daily_budget_cents) == (45, 500)
        (session,) = await repo.list_sessions(GUILD)
        assert session.cost_usd == 0 and (await repo.get_session(GUILD, session.id)).language is None
        await repo.add_usage(GUILD, session.id, TokenCounts(audio_in=5), 0.01)
        assert (await repo.session_usage(GUILD, session.id)).cost_usd == pytest.approx(0.01)
    finally:
        await db.close()

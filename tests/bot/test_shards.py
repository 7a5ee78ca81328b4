"""bot.shards and the sharded bot: Discord's guild → shard rule, SHARD_IDS ranges, and the cross-guild
start-up and retention work split between processes so each guild is handled once (on both backends)."""

from __future__ import annotations

import inspect
import random
from datetime import UTC, datetime, timedelta
from unittest.mock import MagicMock

import discord
import pytest
from discord.ext import commands

from bot.client import TutorBot
from bot.config import ConfigError, load_settings
from bot.shards import ShardScope, format_shard_ids, parse_shard_ids, shard_of, split_shards
from bot.storage import Database, Repository
from tests.helpers import FakeConversations, make_settings

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
# Real-looking snowflakes: the shard comes from the timestamp bits (>> 22), not the low bits.
_RNG = random.Random(16)
GUILDS = [_RNG.randrange(1 << 50, 1 << 62) for _ in range(40)]

LEVELS = "custom_levels (guild_id, name, description, created_by, created_at)"  # named: columns get added


def test_shard_of_is_discords_rule() -> None:
    """(guild_id >> 22) % shard_count, as discord.py's AutoShardedClient routes a guild's events."""
    assert "(guild_id >> 22) % self.shard_count" in inspect.getsource(discord.AutoShardedClient._get_websocket)
    for guild_id in GUILDS:
        assert shard_of(guild_id, 4) == (guild_id >> 22) % 4
    assert {shard_of(g, 4) for g in GUILDS} == {0, 1, 2, 3}  # the sample really spreads


@pytest.mark.parametrize(("text", "ids"), [("0-3", (0, 1, 2, 3)), ("2", (2,)), ("4, 5", (4, 5)),
                                           ("0-1,6", (0, 1, 6)), ("3,1-2", (1, 2, 3))])
def test_shard_ids_ranges_and_lists(text: str, ids: tuple[int, ...]) -> None:
    """SHARD_IDS takes ranges and lists; format_shard_ids writes the shortest equivalent back."""
    assert parse_shard_ids(text) == ids
    assert parse_shard_ids(format_shard_ids(ids)) == ids


@pytest.mark.parametrize("text", ["", "a", "3-1", "1-", "-2", "1;2"])
def test_bad_shard_ids_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_shard_ids(text)


def test_split_shards_is_contiguous_even_and_complete() -> None:
    """Every shard goes to exactly one process, in contiguous ranges differing by at most one shard."""
    assert split_shards(2, 2) == [(0,), (1,)]
    assert split_shards(5, 2) == [(0, 1, 2), (3, 4)]
    for count in range(1, 12):
        for processes in range(1, count + 1):
            ranges = split_shards(count, processes)
            assert [s for r in ranges for s in r] == list(range(count))
            assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    with pytest.raises(ValueError):
        split_shards(1, 2)


def test_settings_shards_are_checked_with_one_sentence() -> None:
    """SHARD_IDS without SHARD_COUNT, or beyond it, is refused naming SHARD_IDS; a good pair becomes a scope."""
    for bad in ({"shard_ids": "0-1"}, {"shard_count": 2, "shard_ids": "1-2"}, {"shard_count": 0}):
        with pytest.raises(ConfigError, match="SHARD_"):
            load_settings(discord_token="t", gemini_api_key="k", _env_file=None, **bad)
    settings = load_settings(discord_token="t", gemini_api_key="k", _env_file=None, shard_count=4, shard_ids="2-3")
    assert settings.shard_scope == ShardScope(4, (2, 3))
    assert settings.shard_scope.describe() == "shards 2-3 of 4"
    assert load_settings(discord_token="t", gemini_api_key="k", _env_file=None).shard_scope.everything


def test_bot_runs_the_configured_shards_and_scopes_its_repository() -> None:
    """TutorBot is an AutoShardedBot given SHARD_COUNT/SHARD_IDS; only the process with shard 0 syncs commands."""
    second = TutorBot(settings=make_settings(shard_count=4, shard_ids="2-3"), db=MagicMock(),
                      conversations=lambda bot: FakeConversations())
    assert isinstance(second, commands.AutoShardedBot)
    assert second.shard_count == 4 and second.shard_ids == [2, 3]
    assert second.repository._shards == ShardScope(4, (2, 3))
    assert not second.syncs_commands
    first = TutorBot(settings=make_settings(shard_count=4, shard_ids="0-1"), db=MagicMock(),
                     conversations=lambda bot: FakeConversations())
    assert first.syncs_commands
    alone = TutorBot(settings=make_settings(), db=MagicMock(), conversations=lambda bot: FakeConversations())
    assert alone.shard_count is None and alone.shard_ids is None and alone.syncs_commands


# ----- cross-guild work, split between two processes sharing one database (both backends)


async def seed(repo: Repository) -> dict[int, int]:
    """Per guild: one session ended 40 days ago (expired), one running (a crash left it open), one ended
    yesterday with its summary never made. Returns {guild_id: running session id}."""
    running = {}
    for guild_id in GUILDS:
        old = await repo.start_session(guild_id, 1, 2, "Ada", "space", 8, started_at=NOW - timedelta(days=41))
        await repo.add_turn(guild_id, old, "child", "hi", NOW - timedelta(days=41), NOW - timedelta(days=41))
        await repo.end_session(guild_id, old, "stopped", ended_at=NOW - timedelta(days=40))
        pending = await repo.start_session(guild_id, 1, 2, "Ada", "space", 8, started_at=NOW - timedelta(days=1))
        await repo.end_session(guild_id, pending, "stopped", ended_at=NOW - timedelta(days=1) + timedelta(minutes=5))
        running[guild_id] = await repo.start_session(guild_id, 1, 2, "Ada", "space", 8, started_at=NOW)
    return running


def processes_over(database: Database, count: int = 2) -> list[Repository]:
    return [Repository(database, shards=ShardScope(count, ids)) for ids in split_shards(count, count)]


async def test_shard_filter_selects_exactly_the_owned_guilds(database: Database) -> None:
    """The SQL condition and `owns` agree for every guild, on this backend's integer arithmetic."""
    for guild_id in GUILDS:
        await database.execute(f"INSERT INTO {LEVELS} VALUES (?, 'x', 'd', 1, 0)", (guild_id,))
    for scope in (ShardScope(4, (1, 2)), ShardScope(3, (0,)), ShardScope(2, (0, 1))):
        condition, params = scope.sql_filter("guild_id")
        rows = await database.fetch_all(f"SELECT guild_id FROM custom_levels WHERE {condition}", params)
        assert {row[0] for row in rows} == {g for g in GUILDS if scope.owns(g)}


async def test_start_up_repair_closes_only_this_processes_guilds(database: Database) -> None:
    """Process 2 starting must not end process 1's conversations; each closes its own shards' leftovers."""
    running = await seed(Repository(database))
    first, second = processes_over(database)
    owned_by_second = [g for g in GUILDS if second._shards.owns(g)]
    assert 0 < len(owned_by_second) < len(GUILDS)
    assert await second.close_dangling_sessions() == len(owned_by_second)
    for guild_id, session_id in running.items():
        session = await first.get_session(guild_id, session_id)
        assert session.is_running == (guild_id not in owned_by_second)
    assert await first.close_dangling_sessions() == len(GUILDS) - len(owned_by_second)
    assert await first.close_dangling_sessions() == await second.close_dangling_sessions() == 0


async def test_retention_and_pending_summaries_split_without_overlap(database: Database) -> None:
    """Both processes' purges together delete each expired session exactly once; pending summaries likewise."""
    await seed(Repository(database))
    processes = processes_over(database)
    pending = [await repo.pending_summaries(limit=500) for repo in processes]
    assert not set(pending[0]) & set(pending[1])
    assert {g for g, _ in pending[0] + pending[1]} == set(GUILDS)
    purged = [await repo.purge_all_expired(NOW) for repo in processes]
    assert not purged[0].keys() & purged[1].keys()
    assert purged[0].keys() | purged[1].keys() == set(GUILDS)
    assert all(counts == (1, 1) for counts in (*purged[0].values(), *purged[1].values()))
    assert [await repo.purge_all_expired(NOW) for repo in processes] == [{}, {}]

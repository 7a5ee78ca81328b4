"""The database is locked by another connection while a real conversation completes spoken turns.

Another sqlite3 connection holds BEGIN EXCLUSIVE (a backup, a moderator's `sqlite3` shell) until two spoken
turns have completed — about 2.5 s, longer than the conversation's 0.3 s write retry, shorter than 10 s.
Turns completed meanwhile must be written afterwards, none lost and in order — whether the
repository's own retries outlast the lock or give up first and the conversation keeps the turns.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time

import pytest

from bot.levels import BUILTIN_LEVELS
from bot.live.session import LiveConnectOptions, LiveSession
from bot.storage import Database, Repository
from bot.tutor import Conversations, StartRequest
from tests.fake_live import FakeLiveServer, make_client_settings
from tests.helpers import FakeVoiceConnector, MockMember, MockVoiceChannel
from tests.signals import tone

GUILD = 6060
FAST = LiveConnectOptions(max_retries=2, first_retry_delay=0.01, max_retry_delay=0.05)


@pytest.fixture
async def server():
    async with FakeLiveServer(think_time=0.05, reply_audio_ms=300) as live_server:
        yield live_server


async def wait_until(predicate, within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.01)


def hold_exclusive_lock(path) -> sqlite3.Connection:
    """Take SQLite's write lock from another connection (`.execute("COMMIT")` releases it)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    return other


@pytest.mark.parametrize(("busy_timeout_ms", "retry_for"), [(50, 10.0), (50, 0.3)],
                         ids=["repository-retries", "conversation-keeps-unsaved"])
async def test_locked_database_delays_turn_writes_but_loses_none(tmp_path, server, monkeypatch, caplog,
                                                                 busy_timeout_ms, retry_for):
    """Two spoken turns complete under an exclusive lock: all four rows are written afterwards, in order.

    The lock is released once both replies are out (not on a timer, which a loaded machine outran): by then the
    first turns' write has waited a whole turn, so a 0.3 s retry gave up and a 10 s one is still waiting."""
    caplog.set_level(logging.WARNING)
    path = tmp_path / "tutor.sqlite3"
    db = await Database.open(path, busy_timeout_ms=busy_timeout_ms, retry_for=retry_for)
    repository = Repository(db)
    await repository.update_settings(GUILD, turn_pause_ms=500)  # both turns must complete while the lock holds
    connector = FakeVoiceConnector()
    conversations = Conversations(settings=make_client_settings(server, monkeypatch), repository=repository,
                                  connect=connector, live_factory=functools.partial(LiveSession, connect_options=FAST))
    kids = [MockMember(display_name="Ana"), MockMember(display_name="Ben")]
    channel = MockVoiceChannel(name="Homework Corner")
    channel.members = list(kids)
    conversation = await conversations.start(StartRequest(
        guild_id=GUILD, voice_channel=channel, starter_id=kids[0].id, starter_name="Ana",
        level=BUILTIN_LEVELS["space"], age=8, greet=False))  # exact turns are counted
    other = hold_exclusive_lock(path)
    try:
        for number, kid in enumerate(kids, start=1):
            await connector.last.say(kid, tone(300.0 * number, 48_000, 0.4, amplitude=0.3, channels=2))
            await server.wait_for(lambda n=number: server.replies_sent >= n)
        assert conversation.status().turns == 0  # the first turns completed while locked: their writes had to wait
        other.execute("COMMIT")
        await conversations.stop(GUILD)
        turns = await repository.get_turns(GUILD, conversation.session_id)
    finally:
        other.close()
        await db.close()
    assert [(t.role, t.speaker_name) for t in turns] == [
        ("child", "Ana"), ("tutor", "Tutor"), ("child", "Ben"), ("tutor", "Tutor")]
    assert [t.text for t in turns] == [server.child_text, server.reply_text] * 2
    assert [t.started_at for t in turns] == sorted(t.started_at for t in turns)
    logged = {r.getMessage() for r in caplog.records}
    gave_up_once = "turns.write_failed" in logged  # the conversation's own retry took over
    assert gave_up_once == (retry_for < 1.0)
    assert gave_up_once or "storage.locked_retry" in logged


async def test_a_turn_write_cancelled_mid_transaction_leaves_the_database_usable(tmp_path):
    """Cancelling add_turn mid-transaction (as stop() cancels tasks) neither breaks the next write nor loses it."""
    db = await Database.open(tmp_path / "tutor.sqlite3")
    try:
        repository = Repository(db)
        session_id = await repository.start_session(GUILD, 1, 2, "Ana", "space", 8)
        now = time.time()
        write = asyncio.create_task(repository.add_turn(GUILD, session_id, "child", "cut short", now, now))
        await asyncio.sleep(0)  # the write is inside the transaction now
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        await repository.add_turn(GUILD, session_id, "tutor", "the next turn", now, now)
        # The cancelled write is shielded: it finishes whole (nothing half-written, nothing lost), in order.
        assert [t.text for t in await repository.get_turns(GUILD, session_id)] == ["cut short", "the next turn"]
    finally:
        await db.close()

"""bot.storage.db and its two backends: migrations, transactions and retries, on real SQLite files and a real
PostgreSQL server. Tests taking `location` run once per backend (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from bot.storage import db as db_module
from bot.storage.db import SCHEMA_VERSION, Database, SchemaTooNew, split_statements
from bot.storage.dialect import Migration, postgres_ddl, postgres_query
from bot.storage.postgres import CommitOutcomeUnknown
from tests.conftest import database_location

TABLES = {"guild_settings", "custom_levels", "sessions", "turns", "member_names"}

LEVELS = "custom_levels (guild_id, name, description, created_by, created_at)"  # named: columns get added


@pytest.fixture
async def location(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on `backend`, not opened yet."""
    return await database_location(backend, request, tmp_path)


async def table_names(db: Database) -> set[str]:
    if db.dialect == "sqlite":
        rows = await db.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await db.fetch_all("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                  "current_schema()")
    return {row[0] for row in rows}


async def columns(db: Database) -> dict[str, set[str]]:
    """{table: {column, …}} for the bot's own tables."""
    found: dict[str, set[str]] = {}
    for table in await table_names(db) - {"tutor_schema", "sqlite_sequence"}:
        if db.dialect == "sqlite":
            names = {row["name"] for row in await db.fetch_all(f"PRAGMA table_info({table})")}
        else:
            names = {row[0] for row in await db.fetch_all(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = ?", (table,))}
        found[table] = names
    return found


async def set_schema_version(db: Database, version: int) -> None:
    if db.dialect == "sqlite":
        await db.execute(f"PRAGMA user_version = {version}")
    else:
        await db.execute("UPDATE tutor_schema SET version = ?", (version,))


async def test_open_migrates_empty_database_to_current_schema(location: str) -> None:
    """A new database gets every table and schema version == SCHEMA_VERSION."""
    db = await Database.open(location)
    try:
        assert await db.schema_version() == SCHEMA_VERSION == len(db_module.MIGRATIONS)
        assert await table_names(db) >= TABLES
    finally:
        await db.close()


async def test_both_backends_build_the_same_tables_and_columns(tmp_path: Path, postgres_server) -> None:
    """The derived PostgreSQL schema has exactly SQLite's tables and columns: the migrations cannot drift."""
    sqlite_db = await Database.open(tmp_path / "tutor.sqlite3")
    postgres_db = await Database.open(await postgres_server.new_database_url())
    try:
        assert await columns(sqlite_db) == await columns(postgres_db)
    finally:
        await sqlite_db.close()
        await postgres_db.close()


async def test_reopen_keeps_data_and_runs_no_migration(location: str, caplog: pytest.LogCaptureFixture) -> None:
    """Opening a migrated database again changes nothing and applies no migration."""
    db = await Database.open(location)
    await db.execute("INSERT INTO custom_levels (guild_id, name, description, created_by, created_at) "
                     "VALUES (1, 'space', 'planets', 2, 0)")
    await db.close()
    caplog.set_level(logging.INFO, logger="bot.storage.db")
    caplog.clear()
    db = await Database.open(location)
    try:
        assert await db.schema_version() == SCHEMA_VERSION
        assert [tuple(r) for r in await db.fetch_all("SELECT guild_id, name FROM custom_levels")] == [(1, "space")]
    finally:
        await db.close()
    assert not [r for r in caplog.records if r.getMessage() == "storage.migrated"]


async def test_processes_opening_together_migrate_once(location: str, caplog: pytest.LogCaptureFixture) -> None:
    """Several openers racing on an empty database (processes starting together): each step runs exactly once."""
    caplog.set_level(logging.INFO, logger="bot.storage.db")
    dbs = await asyncio.gather(*(Database.open(location) for _ in range(4)))
    try:
        assert all([await db.schema_version() == SCHEMA_VERSION for db in dbs])
    finally:
        await asyncio.gather(*(db.close() for db in dbs))
    assert len([r for r in caplog.records if r.getMessage() == "storage.migrated"]) == SCHEMA_VERSION


async def test_close_is_idempotent_and_later_use_fails(location: str) -> None:
    """close() twice is fine; a query after close raises instead of hanging."""
    db = await Database.open(location)
    await db.close()
    await db.close()
    with pytest.raises(RuntimeError):
        await db.schema_version()


async def test_newer_schema_is_refused(location: str) -> None:
    """A database migrated by a newer bot is not touched by older code."""
    db = await Database.open(location)
    await set_schema_version(db, SCHEMA_VERSION + 1)
    await db.close()
    with pytest.raises(SchemaTooNew):
        await Database.open(location)


async def test_failed_migration_rolls_back_completely(location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that fails half-way leaves neither its tables nor a bumped version."""
    broken = (*db_module.MIGRATIONS, "CREATE TABLE extra (x INTEGER);\nINSERT INTO no_such_table VALUES (1);")
    monkeypatch.setattr(db_module, "MIGRATIONS", broken)
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", len(broken))
    with pytest.raises((sqlite3.OperationalError, asyncpg.UndefinedTableError)):
        await Database.open(location)
    monkeypatch.setattr(db_module, "MIGRATIONS", broken[:-1])
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", len(broken) - 1)
    db = await Database.open(location)
    try:
        assert "extra" not in await table_names(db)
        assert await table_names(db) >= TABLES
        assert await db.schema_version() == len(broken) - 1
    finally:
        await db.close()


async def test_new_migration_is_applied_on_reopen(location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Appending a migration upgrades an existing database by exactly that step, keeping its data."""
    db = await Database.open(location)
    await db.execute("INSERT INTO custom_levels (guild_id, name, description, created_by, created_at) "
                     "VALUES (1, 'space', 'd', 2, 0)")
    await db.close()
    extended = (*db_module.MIGRATIONS, "ALTER TABLE custom_levels ADD COLUMN emoji TEXT;",
                Migration(sqlite="CREATE INDEX levels_by_creator ON custom_levels (created_by);",
                          postgres="CREATE INDEX levels_by_creator ON custom_levels USING hash (created_by);"))
    monkeypatch.setattr(db_module, "MIGRATIONS", extended)
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", len(extended))
    db = await Database.open(location)
    try:
        assert await db.schema_version() == len(extended)
        row = await db.fetch_one("SELECT name, emoji FROM custom_levels")
        assert tuple(row) == ("space", None)
    finally:
        await db.close()


async def test_write_rolls_back_when_work_fails(location: str) -> None:
    """An exception inside `write` undoes every statement of that transaction."""
    db = await Database.open(location)

    async def half_done(tx) -> None:
        await tx.execute(f"INSERT INTO {LEVELS} VALUES (1, 'a', 'd', 2, 0)")
        raise KeyError("boom")

    try:
        with pytest.raises(KeyError):
            await db.write(half_done)
        assert await db.fetch_all("SELECT * FROM custom_levels") == []
        await db.write(lambda tx: tx.execute(f"INSERT INTO {LEVELS} VALUES (1, 'b', 'd', 2, 0)"))
        assert len(await db.fetch_all("SELECT * FROM custom_levels")) == 1
    finally:
        await db.close()


async def test_concurrent_write_transactions_do_not_interleave(location: str) -> None:
    """Many coroutines each running a multi-statement transaction all succeed, each seeing only its own rows."""
    db = await Database.open(location)

    async def insert_then_count(index: int) -> None:
        async def work(tx) -> None:
            await tx.execute(f"INSERT INTO {LEVELS} VALUES (1, ?, 'd', 2, 0)", (f"level {index}",))
            await asyncio.sleep(0)  # give other tasks the chance to interleave, if they could
            changed = await tx.execute("UPDATE custom_levels SET description = 'done' WHERE name = ?",
                                       (f"level {index}",))
            assert changed == 1
        await db.write(work)

    try:
        await asyncio.gather(*(insert_then_count(i) for i in range(40)))
        rows = await db.fetch_all("SELECT description FROM custom_levels")
        assert [r[0] for r in rows] == ["done"] * 40
    finally:
        await db.close()


async def test_collate_nocase_is_case_insensitive_on_both(location: str) -> None:
    """`COLLATE NOCASE` columns: equality and uniqueness ignore case on PostgreSQL as on SQLite."""
    db = await Database.open(location)
    try:
        await db.execute(f"INSERT INTO {LEVELS} VALUES (1, 'Space', 'd', 2, 0)")
        assert (await db.fetch_one("SELECT COUNT(*) FROM custom_levels WHERE name = ?", ("sPACE",)))[0] == 1
        with pytest.raises(db_module.IntegrityError):
            await db.execute(f"INSERT INTO {LEVELS} VALUES (1, 'SPACE', 'd', 2, 0)")
    finally:
        await db.close()


async def test_greatest_and_least_work_on_both(location: str) -> None:
    """The two-argument max/min the repository writes as GREATEST/LEAST, NULLs skipped as PostgreSQL does."""
    db = await Database.open(location)
    try:
        row = await db.fetch_one("SELECT GREATEST(1.5, :x), LEAST(1.5, :x), GREATEST(2, NULL)", {"x": 3.0})
        assert tuple(row) == (3.0, 1.5, 2)
    finally:
        await db.close()


async def terminate_client_connections(server) -> int:
    """What a server restart or an operator's pg_terminate_backend does to every connection but ours."""
    admin = await asyncpg.connect(server.url)
    try:
        return await admin.fetchval("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")
    finally:
        await admin.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_connection_lost_mid_transaction_is_retried_whole(location: str, postgres_server,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """The server drops the connection inside a transaction: it is rolled back by the server, `write` runs the
    work again on a fresh connection, and the result is stored exactly once; idle pooled connections that were
    dropped are replaced too."""
    db = await Database.open(location, pool_size=2)
    caplog.set_level(logging.WARNING, logger="bot.storage.db")
    attempts = 0

    async def work(tx) -> None:
        nonlocal attempts
        attempts += 1
        await tx.execute(f"INSERT INTO {LEVELS} VALUES (1, 'first', 'd', 2, 0)")
        if attempts == 1:
            assert await terminate_client_connections(postgres_server) >= 1
        await tx.execute(f"INSERT INTO {LEVELS} VALUES (1, 'second', 'd', 2, 0)")

    try:
        await db.write(work)
        assert attempts == 2
        assert sorted(r[0] for r in await db.fetch_all("SELECT name FROM custom_levels")) == ["first", "second"]
        await terminate_client_connections(postgres_server)  # now while idle in the pool
        await asyncio.gather(*(db.execute(f"INSERT INTO {LEVELS} VALUES (1, ?, 'd', 2, 0)", (f"after {i}",))
                               for i in range(5)))
        assert (await db.fetch_one("SELECT COUNT(*) FROM custom_levels"))[0] == 7
    finally:
        await db.close()
    retries = [r for r in caplog.records if r.getMessage() == "storage.locked_retry"]
    assert retries and retries[0].error == "ConnectionLost"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_connection_lost_during_commit_is_not_retried(location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """If COMMIT itself fails the change may already be stored: `write` says so instead of running the work
    again (a turn stored twice is as wrong as a lost one)."""
    db = await Database.open(location)
    calls = 0

    async def work(tx) -> None:
        nonlocal calls
        calls += 1
        await tx.execute("INSERT INTO custom_levels VALUES (1, 'x', 'd', 2, 0)")

    async def failing_commit(self) -> None:
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    try:
        monkeypatch.setattr(asyncpg.transaction.Transaction, "commit", failing_commit)
        with pytest.raises(CommitOutcomeUnknown):
            await db.write(work)
        assert calls == 1
        monkeypatch.undo()
        await db.execute("INSERT INTO custom_levels VALUES (1, 'y', 'd', 2, 0)")  # the pool recovered
    finally:
        await db.close()


def test_postgres_placeholders() -> None:
    """`:name` and `?` become `$n` (a repeated name reuses its number); literals, comments and casts are left."""
    query = postgres_query("SELECT ':skip', a::text FROM t WHERE a = :a AND b = :b OR a = :a -- :not\n")
    assert query.sql == "SELECT ':skip', a::text FROM t WHERE a = $1 AND b = $2 OR a = $1 -- :not\n"
    assert query.bind({"b": 2, "a": 1, "extra": 3}) == [1, 2]
    assert postgres_query("SELECT * FROM t WHERE a = ? AND b = ?").bind((1, 2)) == [1, 2]
    with pytest.raises(ValueError, match=":b"):
        query.bind({"a": 1})
    with pytest.raises(ValueError, match="mixes"):
        postgres_query("SELECT :a, ?")


def test_postgres_ddl_maps_types_and_drops_strict() -> None:
    """SQLite DDL becomes PostgreSQL DDL: 64-bit integers, doubles, identity ids, no STRICT."""
    ddl = postgres_ddl("CREATE TABLE x (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, at REAL) STRICT;")
    assert ddl == ("CREATE TABLE x (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT NOT NULL, "
                   "at DOUBLE PRECISION);")


# ----- SQLite only


async def test_open_creates_missing_folders(tmp_path: Path) -> None:
    """`Database.open` makes the parent folders of the file."""
    path = tmp_path / "a" / "b" / "tutor.sqlite3"
    db = await Database.open(str(path))
    await db.close()
    assert path.exists()


async def test_pragmas_wal_foreign_keys_busy_timeout(tmp_path: Path) -> None:
    """A file database runs in WAL with foreign keys on, synchronous=NORMAL and a busy timeout."""
    db = await Database.open(tmp_path / "tutor.sqlite3")
    try:
        assert await db.pragma("journal_mode") == "wal"
        assert await db.pragma("foreign_keys") == 1
        assert await db.pragma("synchronous") == 1  # NORMAL
        assert await db.pragma("busy_timeout") == 5000
    finally:
        await db.close()


async def test_memory_database_is_migrated() -> None:
    """":memory:" is accepted for quick tests and gets the full schema."""
    db = await Database.open(":memory:")
    try:
        assert await db.schema_version() == SCHEMA_VERSION
        names = {r[0] for r in await db.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert names >= TABLES
    finally:
        await db.close()


def test_split_statements_respects_strings_and_triggers() -> None:
    """Semicolons inside string literals and trigger bodies do not split a statement."""
    script = """
    CREATE TABLE a (x TEXT DEFAULT ';');
    CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE a SET x = 'y;z'; DELETE FROM a WHERE 0; END;
    INSERT INTO a VALUES ('1;2')
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    with sqlite3.connect(":memory:") as conn:
        for statement in statements:
            conn.execute(statement)
        assert conn.execute("SELECT x FROM a").fetchall() == [("y;z",)]


async def test_write_retries_while_another_process_holds_the_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """With a short busy timeout, `write` logs retries and succeeds once the other writer commits."""
    path = tmp_path / "tutor.sqlite3"
    db = await Database.open(path, busy_timeout_ms=20)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    other.execute(f"INSERT INTO {LEVELS} VALUES (1, 'theirs', 'd', 2, 0)")
    released = asyncio.Event()

    def release() -> None:
        other.execute("COMMIT")
        released.set()

    caplog.set_level(logging.WARNING, logger="bot.storage.db")
    asyncio.get_running_loop().call_later(0.6, release)
    try:
        await db.write(lambda conn: conn.execute(f"INSERT INTO {LEVELS} VALUES (1, 'ours', 'd', 2, 0)"))
        assert released.is_set()
        names = {r[0] for r in await db.fetch_all("SELECT name FROM custom_levels")}
        assert names == {"theirs", "ours"}
    finally:
        other.close()
        await db.close()
    assert [r for r in caplog.records if r.getMessage() == "storage.locked_retry"]


async def test_write_gives_up_after_retry_window(tmp_path: Path) -> None:
    """If the lock never frees, `write` raises the lock error instead of waiting forever."""
    path = tmp_path / "tutor.sqlite3"
    db = await Database.open(path, busy_timeout_ms=20, retry_for=0.3)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await db.write(lambda conn: conn.execute(f"INSERT INTO {LEVELS} VALUES (1, 'x', 'd', 2, 0)"))
    finally:
        other.execute("ROLLBACK")
        other.close()
        await db.close()


async def test_the_turn_speakers_migration_moves_existing_rows(location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Version 5 moves `turns.speaker_id` into `turn_speakers`; typed turns (stored with a name only) are
    credited to the starter or to the member of that name in the session; the old column is gone."""
    from bot.storage.repository import Repository

    step = db_module.MIGRATIONS.index(db_module._V5_TURN_SPEAKERS)
    monkeypatch.setattr(db_module, "MIGRATIONS", db_module.MIGRATIONS[:step])
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", step)
    db = await Database.open(location)
    await db.execute("INSERT INTO sessions (id, guild_id, channel_id, starter_id, starter_name, level, age, "
                     "started_at, ended_at) VALUES (1, 7, 5, 11, 'Ana', 'space', 8, 0, 10)")
    legacy = [  # id, role, speaker_id, speaker_name: spoken, spoken, tutor, typed by the starter, typed by Ben
        (1, "child", 11, "Ana"), (2, "child", 12, "Ben"), (3, "tutor", None, "Tutor"), (4, "child", None, "Ana"),
        (5, "child", None, "Ben"), (6, "child", None, None)]
    for turn_id, role, speaker_id, name in legacy:
        await db.execute("INSERT INTO turns (id, session_id, guild_id, role, speaker_id, speaker_name, text, "
                         "started_at, ended_at) VALUES (?, 1, 7, ?, ?, ?, 'words', ?, ?)",
                         (turn_id, role, speaker_id, name, turn_id, turn_id))
    await db.close()
    monkeypatch.undo()
    db = await Database.open(location)
    try:
        rows = await db.fetch_all("SELECT turn_id, member_id, how FROM turn_speakers ORDER BY turn_id")
        assert [tuple(r) for r in rows] == [(1, 11, "spoke"), (2, 12, "spoke"), (4, 11, "typed"), (5, 12, "typed")]
        turns = await Repository(db).get_turns(7, 1)
        assert [t.speaker_id for t in turns] == [11, 12, None, 11, 12, None]
        with pytest.raises(Exception, match="speaker_id"):
            await db.fetch_all("SELECT speaker_id FROM turns")
    finally:
        await db.close()


async def test_open_waits_while_another_process_holds_a_new_file(tmp_path: Path) -> None:
    """Shard processes starting together: the first open of a new file meets another process's lock when it
    switches to WAL. The open is retried whole (functions, PRAGMAs) and succeeds once the lock is free."""
    path = tmp_path / "tutor.sqlite3"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE theirs (a)")
    other.execute("BEGIN EXCLUSIVE")
    asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
    try:
        db = await Database.open(path, busy_timeout_ms=5)
    finally:
        other.close()
    try:
        assert await db.pragma("journal_mode") == "wal"
        assert (await db.fetch_one("SELECT GREATEST(1, 2)"))[0] == 2
    finally:
        await db.close()


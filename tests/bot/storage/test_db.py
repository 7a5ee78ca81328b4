"""bot.storage.db: PRAGMAs, forward-only migrations, serialised and retried writes, on real SQLite files."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from bot.storage import db as db_module
from bot.storage.db import SCHEMA_VERSION, Database, SchemaTooNew, split_statements

TABLES = {"guild_settings", "custom_levels", "sessions", "turns"}


def table_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_open_migrates_empty_file_to_current_schema(tmp_path: Path) -> None:
    """A new file gets every table and user_version == SCHEMA_VERSION."""
    path = tmp_path / "tutor.sqlite3"
    db = await Database.open(path)
    try:
        assert await db.schema_version() == SCHEMA_VERSION == len(db_module.MIGRATIONS)
    finally:
        await db.close()
    assert table_names(path) >= TABLES
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_open_creates_missing_folders(tmp_path: Path) -> None:
    """`Database.open` makes the parent folders of the file."""
    path = tmp_path / "a" / "b" / "tutor.sqlite3"
    db = await Database.open(str(path))
    await db.close()
    assert path.exists()


async def test_reopen_keeps_data_and_runs_no_migration(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Opening a migrated file again changes nothing and applies no migration."""
    path = tmp_path / "tutor.sqlite3"
    db = await Database.open(path)
    await db.write(lambda conn: conn.execute(
        "INSERT INTO custom_levels VALUES (1, 'space', 'planets', 2, 0)"))
    await db.close()
    caplog.set_level(logging.INFO, logger="bot.storage.db")
    caplog.clear()
    db = await Database.open(path)
    try:
        assert await db.schema_version() == SCHEMA_VERSION
        assert [tuple(r) for r in await db.fetch_all("SELECT guild_id, name FROM custom_levels")] == [(1, "space")]
    finally:
        await db.close()
    assert not [r for r in caplog.records if r.getMessage() == "storage.migrated"]


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


async def test_close_is_idempotent_and_later_use_fails(tmp_path: Path) -> None:
    """close() twice is fine; a query after close raises instead of hanging."""
    db = await Database.open(tmp_path / "tutor.sqlite3")
    await db.close()
    await db.close()
    with pytest.raises(RuntimeError):
        await db.schema_version()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file migrated by a newer bot (higher user_version) is not touched by older code."""
    path = tmp_path / "tutor.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew):
        await Database.open(path)


async def test_failed_migration_rolls_back_completely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that fails half-way leaves neither its tables nor a bumped user_version."""
    path = tmp_path / "tutor.sqlite3"
    broken = (*db_module.MIGRATIONS, "CREATE TABLE extra (x INTEGER);\nINSERT INTO no_such_table VALUES (1);")
    monkeypatch.setattr(db_module, "MIGRATIONS", broken)
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", len(broken))
    with pytest.raises(sqlite3.OperationalError):
        await Database.open(path)
    assert "extra" not in table_names(path)
    assert table_names(path) >= TABLES
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(broken) - 1


async def test_new_migration_is_applied_on_reopen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Appending a migration upgrades an existing file by exactly that step, keeping its data."""
    path = tmp_path / "tutor.sqlite3"
    db = await Database.open(path)
    await db.write(lambda conn: conn.execute("INSERT INTO custom_levels VALUES (1, 'space', 'd', 2, 0)"))
    await db.close()
    extended = (*db_module.MIGRATIONS, "ALTER TABLE custom_levels ADD COLUMN emoji TEXT;")
    monkeypatch.setattr(db_module, "MIGRATIONS", extended)
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", len(extended))
    db = await Database.open(path)
    try:
        assert await db.schema_version() == len(extended)
        row = await db.fetch_one("SELECT name, emoji FROM custom_levels")
        assert tuple(row) == ("space", None)
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


async def test_write_rolls_back_when_work_fails(tmp_path: Path) -> None:
    """An exception inside `write` undoes every statement of that transaction."""
    db = await Database.open(tmp_path / "tutor.sqlite3")

    async def half_done(conn: aiosqlite.Connection) -> None:
        await conn.execute("INSERT INTO custom_levels VALUES (1, 'a', 'd', 2, 0)")
        raise KeyError("boom")

    try:
        with pytest.raises(KeyError):
            await db.write(half_done)
        assert await db.fetch_all("SELECT * FROM custom_levels") == []
        await db.write(lambda conn: conn.execute("INSERT INTO custom_levels VALUES (1, 'b', 'd', 2, 0)"))
        assert len(await db.fetch_all("SELECT * FROM custom_levels")) == 1
    finally:
        await db.close()


async def test_concurrent_write_transactions_do_not_interleave(tmp_path: Path) -> None:
    """Many coroutines each running a multi-statement transaction on the one connection all succeed."""
    db = await Database.open(tmp_path / "tutor.sqlite3")

    async def insert_then_count(index: int) -> None:
        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute("INSERT INTO custom_levels VALUES (1, ?, 'd', 2, 0)", (f"level {index}",))
            await asyncio.sleep(0)  # give other tasks the chance to interleave, if they could
            await conn.execute("UPDATE custom_levels SET description = 'done' WHERE name = ?", (f"level {index}",))
        await db.write(work)

    try:
        await asyncio.gather(*(insert_then_count(i) for i in range(40)))
        rows = await db.fetch_all("SELECT description FROM custom_levels")
        assert [r[0] for r in rows] == ["done"] * 40
    finally:
        await db.close()


async def test_write_retries_while_another_process_holds_the_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """With a short busy timeout, `write` logs retries and succeeds once the other writer commits."""
    path = tmp_path / "tutor.sqlite3"
    db = await Database.open(path, busy_timeout_ms=20)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    other.execute("INSERT INTO custom_levels VALUES (1, 'theirs', 'd', 2, 0)")
    released = asyncio.Event()

    def release() -> None:
        other.execute("COMMIT")
        released.set()

    caplog.set_level(logging.WARNING, logger="bot.storage.db")
    asyncio.get_running_loop().call_later(0.6, release)
    try:
        await db.write(lambda conn: conn.execute("INSERT INTO custom_levels VALUES (1, 'ours', 'd', 2, 0)"))
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
            await db.write(lambda conn: conn.execute("INSERT INTO custom_levels VALUES (1, 'x', 'd', 2, 0)"))
    finally:
        other.execute("ROLLBACK")
        other.close()
        await db.close()

"""SQLite backend: one aiosqlite connection per process, WAL, serialised and retried writes.

Why this shape: a single connection plus an `asyncio.Lock` means two coroutines can never interleave
statements inside one transaction. WAL + `synchronous=NORMAL` makes every committed transaction survive a
process kill (only a power loss can drop the last few). Several processes may share the file (one per
shard range, a backup, `sqlite3` in a shell): WAL lets readers run beside the one writer, `busy_timeout`
waits inside SQLite for the write lock, and `Database.write` retries with backoff on top of it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

from bot.storage.db import (
    DEFAULT_BUSY_TIMEOUT_MS,
    DEFAULT_RETRY_FOR_SECONDS,
    Database,
    IntegrityError,
    Row,
    T,
    Work,
)
from bot.storage.dialect import SQLITE, SQLITE_FUNCTIONS, Params, split_statements

log = logging.getLogger("bot.storage.db")


def is_lock_error(exc: BaseException) -> bool:
    """True for SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock, so trying again can succeed."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class _SQLiteTransaction:
    """`Transaction` over the one connection, already inside BEGIN IMMEDIATE."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        try:
            async with self._conn.execute(sql, params) as cursor:
                return cursor.rowcount
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        try:
            return list(await self._conn.execute_fetchall(sql, params))
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None


class SQLiteDatabase(Database):
    """One aiosqlite connection; every statement goes through the shared interface."""

    dialect = SQLITE

    def __init__(self, conn: aiosqlite.Connection, path: str, *, retry_for: float) -> None:
        super().__init__(path, retry_for=retry_for)
        self._conn = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(
        cls, path: Path | str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        retry_for: float = DEFAULT_RETRY_FOR_SECONDS,
    ) -> SQLiteDatabase:
        """Open (creating the folder and file if needed), set PRAGMAs and migrate to `SCHEMA_VERSION`."""
        location = str(path)
        if location != ":memory:":
            Path(location).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; `_transaction` issues BEGIN IMMEDIATE itself.
        conn = await aiosqlite.connect(location, isolation_level=None)
        conn.row_factory = sqlite3.Row
        db = cls(conn, location, retry_for=retry_for)

        async def configure() -> None:
            # Each PRAGMA's cursor is read and closed: a statement left active would make the retry's (and any
            # later) create_function fail with "Error creating function".
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            # Switching a new file to WAL takes the write lock: another process opening it at the same moment
            # (shard processes starting together) makes this fail with "locked", so it is retried like a write.
            await conn.execute_fetchall("PRAGMA journal_mode = WAL")
            await conn.execute_fetchall("PRAGMA synchronous = NORMAL")
            await conn.execute_fetchall("PRAGMA foreign_keys = ON")

        try:
            # No lock involved, so not part of the retried block (SQLite refuses to redefine a function while
            # a statement is active).
            for name, arity, function in SQLITE_FUNCTIONS:
                await conn.create_function(name, arity, function, deterministic=True)
            await db._with_retry(configure, "open")
            await db._migrate()
        except BaseException:
            await db.close()
            raise
        log.info("storage.opened", extra={"backend": SQLITE, "path": location,
                                          "schema": await db.schema_version()})
        return db

    @property
    def path(self) -> str:
        """Where the file lives (or `:memory:`)."""
        return self._location

    async def pragma(self, name: str) -> Any:
        """Read one PRAGMA value (journal_mode, foreign_keys, …); for checks and tests."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        row = await self.fetch_one(f"PRAGMA {name}")
        return None if row is None else row[0]

    async def set_trace_callback(self, callback: Callable[[str], None] | None) -> None:
        """Call `callback(sql)` for every statement SQLite runs (debugging, and tests that audit the SQL)."""
        await self._conn.set_trace_callback(callback)

    async def _read(self, sql: str, params: Params) -> list[Row]:
        async with self._lock:
            return list(await self._conn.execute_fetchall(sql, params))

    async def _transaction(self, work: Work[T]) -> T:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = await work(_SQLiteTransaction(self._conn))
                await self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    await self._conn.execute("ROLLBACK")
                raise
            return result

    def _is_transient(self, exc: BaseException) -> bool:
        return is_lock_error(exc)

    async def _read_schema_version(self) -> int:
        row = await self._read("PRAGMA user_version", ())
        return int(row[0][0])

    async def _apply_migration(self, tx: Any, version: int, script: str) -> bool:
        # Re-read under the write lock (BEGIN IMMEDIATE): another process may have migrated since we looked.
        (current,) = await tx.fetch_one("PRAGMA user_version")
        if current >= version:
            return False
        for statement in split_statements(script):
            await tx.execute(statement)
        await tx.execute(f"PRAGMA user_version = {int(version)}")
        return True

    async def _close(self) -> None:
        async with self._lock:
            await self._conn.close()

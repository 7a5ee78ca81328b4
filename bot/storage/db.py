"""The one SQLite connection: PRAGMAs, forward-only migrations, serialised and retried writes.

Why this shape: a single aiosqlite connection plus an `asyncio.Lock` means two coroutines can never interleave
statements inside one transaction. WAL + `synchronous=NORMAL` makes every committed transaction survive a process
kill (only a power loss can drop the last few). Another process (a backup, `sqlite3` in a shell) may hold the
write lock for a while: `busy_timeout` waits inside SQLite, and `write` retries with backoff on top of it, so
a turn is delayed rather than lost.

Times are stored as UTC unix seconds (`REAL`); see `bot.storage.models`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

log = logging.getLogger(__name__)

_V1_INITIAL = """
CREATE TABLE guild_settings (
    guild_id            INTEGER PRIMARY KEY,
    moderator_role_id   INTEGER,
    alerts_channel_id   INTEGER,
    starter_role_id     INTEGER,
    daily_minutes       INTEGER NOT NULL DEFAULT 60 CHECK (daily_minutes BETWEEN 1 AND 1440),
    max_session_minutes INTEGER NOT NULL DEFAULT 30 CHECK (max_session_minutes BETWEEN 1 AND 240),
    retention_days      INTEGER NOT NULL DEFAULT 30 CHECK (retention_days BETWEEN 1 AND 365),
    updated_at          REAL NOT NULL
) STRICT;

CREATE TABLE custom_levels (
    guild_id    INTEGER NOT NULL,
    name        TEXT NOT NULL COLLATE NOCASE CHECK (length(trim(name)) > 0),
    description TEXT NOT NULL,
    created_by  INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (guild_id, name)
) STRICT;

CREATE TABLE sessions (
    id                INTEGER PRIMARY KEY,
    guild_id          INTEGER NOT NULL,
    channel_id        INTEGER NOT NULL,
    starter_id        INTEGER NOT NULL,
    starter_name      TEXT NOT NULL,
    level             TEXT NOT NULL,
    age               INTEGER NOT NULL,
    started_at        REAL NOT NULL,
    ended_at          REAL CHECK (ended_at IS NULL OR ended_at >= started_at),
    end_reason        TEXT,
    resumption_handle TEXT,
    summary           TEXT,
    summary_status    TEXT NOT NULL DEFAULT 'pending' CHECK (summary_status IN ('pending', 'ok', 'unavailable')),
    UNIQUE (id, guild_id)  -- target of turns' composite key: a turn cannot point into another guild's session
) STRICT;
CREATE INDEX sessions_by_guild_start ON sessions (guild_id, started_at);
CREATE INDEX sessions_by_guild_starter ON sessions (guild_id, starter_id);
CREATE INDEX sessions_running ON sessions (guild_id) WHERE ended_at IS NULL;

CREATE TABLE turns (
    id           INTEGER PRIMARY KEY,
    session_id   INTEGER NOT NULL,
    guild_id     INTEGER NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('child', 'tutor', 'system')),
    speaker_id   INTEGER,
    speaker_name TEXT,
    text         TEXT NOT NULL,
    started_at   REAL NOT NULL,
    ended_at     REAL NOT NULL CHECK (ended_at >= started_at),
    interrupted  INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1)),
    flag_reason  TEXT,
    FOREIGN KEY (session_id, guild_id) REFERENCES sessions (id, guild_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX turns_by_session ON turns (session_id, guild_id, started_at);
CREATE INDEX turns_flagged ON turns (guild_id, started_at) WHERE flag_reason IS NOT NULL;
CREATE INDEX turns_by_speaker ON turns (guild_id, speaker_id) WHERE speaker_id IS NOT NULL;
"""

# What each conversation costs and what the tutor did. `turn_usage` holds every per-turn usage snapshot (the
# bill is their sum) with the turn it came with; `session_events` every tool call and budget stop, tied to
# the turn it belongs to. Both go when their session goes; an event whose turn is erased goes with it (its
# reason may quote the child), a usage row only loses the link.
_V2_COST_AND_TOOLS = """
ALTER TABLE guild_settings ADD COLUMN daily_budget_cents INTEGER NOT NULL DEFAULT 500
    CHECK (daily_budget_cents BETWEEN 10 AND 100000);
ALTER TABLE sessions ADD COLUMN language TEXT;

CREATE TABLE turn_usage (
    id               INTEGER PRIMARY KEY,
    session_id       INTEGER NOT NULL,
    guild_id         INTEGER NOT NULL,
    turn_id          INTEGER REFERENCES turns (id) ON DELETE SET NULL,
    at               REAL NOT NULL,
    text_in_tokens   INTEGER NOT NULL DEFAULT 0 CHECK (text_in_tokens >= 0),
    audio_in_tokens  INTEGER NOT NULL DEFAULT 0 CHECK (audio_in_tokens >= 0),
    text_out_tokens  INTEGER NOT NULL DEFAULT 0 CHECK (text_out_tokens >= 0),
    audio_out_tokens INTEGER NOT NULL DEFAULT 0 CHECK (audio_out_tokens >= 0),
    thoughts_tokens  INTEGER NOT NULL DEFAULT 0 CHECK (thoughts_tokens >= 0),
    total_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    cost_usd         REAL NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    FOREIGN KEY (session_id, guild_id) REFERENCES sessions (id, guild_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX turn_usage_by_session ON turn_usage (guild_id, session_id);
CREATE INDEX turn_usage_by_day ON turn_usage (guild_id, at);

CREATE TABLE session_events (
    id         INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL,
    guild_id   INTEGER NOT NULL,
    turn_id    INTEGER REFERENCES turns (id) ON DELETE CASCADE,
    at         REAL NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('tool_call', 'budget_stop')),
    name       TEXT NOT NULL,
    call_id    TEXT,
    category   TEXT,
    reason     TEXT NOT NULL DEFAULT '',
    outcome    TEXT NOT NULL DEFAULT '',
    FOREIGN KEY (session_id, guild_id) REFERENCES sessions (id, guild_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX session_events_by_session ON session_events (guild_id, session_id, at);
CREATE INDEX session_events_by_turn ON session_events (turn_id) WHERE turn_id IS NOT NULL;
"""

# Forward-only: never edit a shipped entry; append a new script. Entry n brings the schema to user_version n+1.
MIGRATIONS: tuple[str, ...] = (
    _V1_INITIAL,
    _V2_COST_AND_TOOLS,
)
SCHEMA_VERSION = len(MIGRATIONS)
DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_RETRY_FOR_SECONDS = 10.0
_FIRST_BACKOFF_SECONDS = 0.05
_MAX_BACKOFF_SECONDS = 1.0

T = TypeVar("T")
Params = Sequence[Any] | dict[str, Any]


def split_statements(script: str) -> list[str]:
    """Cut a migration script into single statements (`execute` takes one; `executescript` would commit early).

    Cuts only where SQLite itself says a statement is complete, so `;` inside strings or trigger bodies is safe.
    """
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n\t;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \n\t;"):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {pending.strip()[:60]!r}")
    return statements


class SchemaTooNew(RuntimeError):
    """The file was migrated by a newer version of the bot; refusing to run old code against it."""


def is_lock_error(exc: BaseException) -> bool:
    """True for SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock, so trying again can succeed."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class Database:
    """One aiosqlite connection; every statement goes through `fetch_all`/`fetch_one` or `write`."""

    def __init__(self, conn: aiosqlite.Connection, path: str, *, retry_for: float) -> None:
        self._conn = conn
        self._path = path
        self._retry_for = retry_for
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        retry_for: float = DEFAULT_RETRY_FOR_SECONDS,
    ) -> Database:
        """Open (creating the folder and file if needed), set PRAGMAs and migrate to `SCHEMA_VERSION`."""
        location = str(path)
        if location != ":memory:":
            Path(location).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; `write` issues BEGIN IMMEDIATE itself.
        conn = await aiosqlite.connect(location, isolation_level=None)
        conn.row_factory = sqlite3.Row
        db = cls(conn, location, retry_for=retry_for)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await db._migrate()
        except BaseException:
            await db.close()
            raise
        log.info("storage.opened", extra={"path": location, "schema": SCHEMA_VERSION})
        return db

    @property
    def path(self) -> str:
        """Where the file lives (or `:memory:`)."""
        return self._path

    async def schema_version(self) -> int:
        """`PRAGMA user_version`: the number of migrations applied."""
        return int(await self.pragma("user_version"))

    async def pragma(self, name: str) -> Any:
        """Read one PRAGMA value (journal_mode, foreign_keys, …); for checks and tests."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        row = await self.fetch_one(f"PRAGMA {name}")
        return None if row is None else row[0]

    async def set_trace_callback(self, callback: Callable[[str], None] | None) -> None:
        """Call `callback(sql)` for every statement SQLite runs (debugging, and tests that audit the SQL)."""
        await self._conn.set_trace_callback(callback)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run one read statement; never interleaves with a write transaction."""

        async def read() -> list[sqlite3.Row]:
            return list(await self._conn.execute_fetchall(sql, params))

        return await self._locked_with_retry(read, "read")

    async def fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """The first row of `fetch_all`, or None."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `work(conn)` inside one BEGIN IMMEDIATE … COMMIT transaction and return its result.

        On a lock error the transaction is rolled back and `work` runs again from the start (with backoff)
        until `retry_for` seconds have passed; any other error rolls back and propagates.
        """

        async def transaction() -> T:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = await work(self._conn)
                await self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    await self._conn.execute("ROLLBACK")
                raise
            return result

        return await self._locked_with_retry(transaction, "write")

    async def _locked_with_retry(self, attempt: Callable[[], Awaitable[T]], kind: str) -> T:
        """Hold the lock for one attempt at a time; back off and retry while another process holds SQLite's."""
        if self._closed:
            raise RuntimeError("database is closed")
        deadline = time.monotonic() + self._retry_for
        backoff = _FIRST_BACKOFF_SECONDS
        tries = 0
        while True:
            tries += 1
            try:
                return await self._run_uncancellable(attempt)
            except sqlite3.OperationalError as exc:
                if not is_lock_error(exc) or time.monotonic() + backoff > deadline:
                    raise
                log.warning("storage.locked_retry", extra={"kind": kind, "attempt": tries,
                                                           "backoff_s": round(backoff, 3)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)

    async def _run_uncancellable(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """One attempt under the lock, shielded: a caller cancelled mid-transaction (stop() cancelling a task)
        must not leave the connection inside BEGIN … with no COMMIT or ROLLBACK, which would fail every later
        write. The attempt finishes on its own; the caller still sees its cancellation."""

        async def locked() -> T:
            async with self._lock:
                return await attempt()

        task = asyncio.ensure_future(locked())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_orphaned_failure)
            raise

    async def _migrate(self) -> None:
        """Apply each missing migration in its own transaction; the version is re-read under the write lock."""
        current = await self.schema_version()
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(f"{self._path} has schema {current}; this bot knows up to {SCHEMA_VERSION}")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            await self._apply(version, MIGRATIONS[version - 1])

    async def _apply(self, version: int, script: str) -> None:
        async def migrate(conn: aiosqlite.Connection) -> bool:
            # Re-read under the write lock: another process may have migrated since we looked.
            async with conn.execute("PRAGMA user_version") as cursor:
                (current,) = await cursor.fetchone()
            if current >= version:
                return False
            for statement in split_statements(script):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {int(version)}")
            return True

        if await self.write(migrate):
            log.info("storage.migrated", extra={"path": self._path, "version": version})

    async def close(self) -> None:
        """Close the connection; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            await self._conn.close()
        log.info("storage.closed", extra={"path": self._path})


def _log_orphaned_failure(task: asyncio.Task) -> None:
    """A shielded attempt whose caller was cancelled: nobody awaits it, so report its failure here."""
    if not task.cancelled() and task.exception() is not None:
        log.error("storage.orphaned_attempt_failed", exc_info=task.exception())

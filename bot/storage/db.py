"""The storage interface both backends share: transactions, reads, retries, forward-only migrations.

`Database.open(location)` picks the backend: a file path (or `sqlite:///path`) opens SQLite
(`bot.storage.sqlite`), a `postgresql://` URL opens PostgreSQL (`bot.storage.postgres`). Code above this layer
(the repository) sees only `fetch_all`/`fetch_one`/`execute` and `write(work)`, where `work(tx)` gets a
`Transaction` with the same three calls. SQL is written once; `bot.storage.dialect` says how.

Retry-on-busy, the same on both: `write` runs `work` inside one transaction; when the backend reports a
transient conflict (SQLite: another process holds the write lock; PostgreSQL: a serialization failure,
deadlock, or a connection lost before COMMIT) the transaction is rolled back and `work` runs again from the
start, with backoff, until `retry_for` seconds have passed. So a turn is delayed rather than lost. Any other
error rolls back and propagates. A caller cancelled mid-transaction does not cut it short (see `_shielded`).

Times are stored as UTC unix seconds; see `bot.storage.models`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from bot.storage.dialect import Migration, Params, migration_script, split_statements

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

# V3: a server's time zone (when "today" ends, how times are shown), the title a moderator gave their own
# topic (the name column keeps the slug commands use), and the name each kid chose for the tutor to use.
_V3_NAMES_AND_TIME_ZONE = """
ALTER TABLE guild_settings ADD COLUMN time_zone TEXT;
ALTER TABLE custom_levels ADD COLUMN title TEXT;
CREATE TABLE member_names (
    guild_id   INTEGER NOT NULL,
    member_id  INTEGER NOT NULL,
    name       TEXT NOT NULL CHECK (length(trim(name)) > 0),
    set_by     INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (guild_id, member_id)
) STRICT;
"""

# How long a pause ends a child's turn, per server (NULL: the default, see bot.turn_taking).
_V4_TURN_PAUSE = """
ALTER TABLE guild_settings ADD COLUMN turn_pause_ms INTEGER
    CHECK (turn_pause_ms IS NULL OR turn_pause_ms BETWEEN 500 AND 3000);
"""

# Who spoke or typed in each turn: every member, not only the loudest (a turn can have several, and a moderator's
# "delete this member" must find every turn their words are in). `ordinal` 0 is credited first (the loudest, or
# the typist). Existing rows move here: `turns.speaker_id` (spoken turns), and typed turns, which were stored
# with the author's name only, are credited to the session's starter or to a member named so elsewhere in that
# session. Then `turns.speaker_id` goes.
_V5_TURN_SPEAKERS = """
CREATE TABLE turn_speakers (
    turn_id   INTEGER NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
    guild_id  INTEGER NOT NULL,
    member_id INTEGER NOT NULL,
    ordinal   INTEGER NOT NULL CHECK (ordinal >= 0),
    how       TEXT NOT NULL DEFAULT 'spoke' CHECK (how IN ('spoke', 'typed')),
    PRIMARY KEY (turn_id, member_id)
) STRICT;
CREATE INDEX turn_speakers_by_member ON turn_speakers (guild_id, member_id);

INSERT INTO turn_speakers (turn_id, guild_id, member_id, ordinal, how)
    SELECT id, guild_id, speaker_id, 0, 'spoke' FROM turns WHERE speaker_id IS NOT NULL;
INSERT INTO turn_speakers (turn_id, guild_id, member_id, ordinal, how)
    SELECT t.id, t.guild_id, s.starter_id, 0, 'typed' FROM turns t
    JOIN sessions s ON s.id = t.session_id AND s.guild_id = t.guild_id
    WHERE t.role = 'child' AND t.speaker_id IS NULL AND t.speaker_name = s.starter_name;
INSERT INTO turn_speakers (turn_id, guild_id, member_id, ordinal, how)
    SELECT t.id, t.guild_id, MIN(o.speaker_id), 0, 'typed' FROM turns t
    JOIN turns o ON o.session_id = t.session_id AND o.guild_id = t.guild_id AND o.speaker_name = t.speaker_name
        AND o.speaker_id IS NOT NULL
    WHERE t.role = 'child' AND t.speaker_id IS NULL
        AND NOT EXISTS (SELECT 1 FROM turn_speakers x WHERE x.turn_id = t.id)
    GROUP BY t.id, t.guild_id;

DROP INDEX turns_by_speaker;
ALTER TABLE turns DROP COLUMN speaker_id;
"""

# The bot's own messages in a server's alerts channel that quote a session (a flagged excerpt, an alert about a
# child's words, a summary), by message id: erasing the words (a member, a session, the retention purge) marks
# their posts `stale` in the same transaction, and the alerts cog deletes those from Discord (retrying until it
# can). No foreign keys: a post must outlive its session's row until it is gone from Discord too.
_V6_ALERT_POSTS = """
CREATE TABLE alert_posts (
    id         INTEGER PRIMARY KEY,
    guild_id   INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    session_id INTEGER NOT NULL,
    turn_id    INTEGER,
    event_id   INTEGER,
    kind       TEXT NOT NULL CHECK (kind IN ('flagged', 'alert', 'summary')),
    posted_at  REAL NOT NULL,
    stale      INTEGER NOT NULL DEFAULT 0 CHECK (stale IN (0, 1)),
    UNIQUE (channel_id, message_id)
) STRICT;
CREATE INDEX alert_posts_by_session ON alert_posts (guild_id, session_id);
CREATE INDEX alert_posts_stale ON alert_posts (guild_id) WHERE stale = 1;
"""

# Forward-only: never edit a shipped entry; append a new one. Entry n brings the schema to version n+1.
# Write each in SQLite's DDL (PostgreSQL's is derived, see bot.storage.dialect); both backends apply the same list.
MIGRATIONS: tuple[str | Migration, ...] = (
    _V1_INITIAL,
    _V2_COST_AND_TOOLS,
    _V3_NAMES_AND_TIME_ZONE,
    _V4_TURN_PAUSE,
    _V5_TURN_SPEAKERS,
    _V6_ALERT_POSTS,
)
SCHEMA_VERSION = len(MIGRATIONS)
DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_RETRY_FOR_SECONDS = 10.0
_FIRST_BACKOFF_SECONDS = 0.05
_MAX_BACKOFF_SECONDS = 1.0

T = TypeVar("T")
Row = Any  # sqlite3.Row or asyncpg.Record: both read as row["column"] and row[0]

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_MS", "DEFAULT_RETRY_FOR_SECONDS", "MIGRATIONS", "SCHEMA_VERSION", "Database",
    "IntegrityError", "Migration", "Params", "Row", "SchemaTooNew", "Transaction", "split_statements",
]


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer version of the bot; refusing to run old code against it."""


class IntegrityError(Exception):
    """A constraint refused the change (duplicate key, foreign key, check), whichever backend said so."""


class Transaction(Protocol):
    """What `work` gets inside `Database.write`: statements of one transaction, in order."""

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        ...

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one statement and return its rows (SELECT, or INSERT/UPDATE/DELETE … RETURNING)."""
        ...

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """The first row of `fetch_all`, or None."""
        ...


Work = Callable[[Transaction], Awaitable[T]]


class Database(ABC):
    """One store, shared by every task of the process; each backend fills in the abstract methods."""

    dialect: ClassVar[str]

    def __init__(self, location: str, *, retry_for: float) -> None:
        self._location = location
        self._retry_for = retry_for
        self._closed = False

    @classmethod
    async def open(cls, location: Path | str, **options: Any) -> Database:
        """Open the backend `location` names and migrate it to `SCHEMA_VERSION`.

        `options`: `retry_for` (both), `busy_timeout_ms` (SQLite), `pool_size` (PostgreSQL).
        """
        text = str(location)
        if text.startswith(("postgresql://", "postgres://")):
            from bot.storage.postgres import PostgresDatabase

            return await PostgresDatabase.connect(text, **options)
        from bot.storage.sqlite import SQLiteDatabase

        return await SQLiteDatabase.connect(text.removeprefix("sqlite:///").removeprefix("sqlite://"), **options)

    @property
    def location(self) -> str:
        """Where the data lives, safe to log (a PostgreSQL password is never part of it)."""
        return self._location

    # ----- the interface the repository uses

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one read statement outside any write transaction."""
        return await self._with_retry(lambda: self._read(sql, params), "read")

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """The first row of `fetch_all`, or None."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One write statement in its own transaction; returns the number of rows it changed."""
        return await self.write(lambda tx: tx.execute(sql, params))

    async def write(self, work: Work[T]) -> T:
        """Run `work(tx)` inside one transaction and return its result; retried whole on a transient conflict."""
        return await self._with_retry(lambda: self._transaction(work), "write")

    async def schema_version(self) -> int:
        """How many migrations this database has applied."""
        return await self._with_retry(self._read_schema_version, "read")

    async def close(self) -> None:
        """Release the connection(s); calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self._close()
        log.info("storage.closed", extra={"location": self._location})

    # ----- what each backend provides

    @abstractmethod
    async def _read(self, sql: str, params: Params) -> list[Row]: ...

    @abstractmethod
    async def _transaction(self, work: Work[T]) -> T: ...

    @abstractmethod
    def _is_transient(self, exc: BaseException) -> bool:
        """True when trying the same transaction again can succeed (lock held elsewhere, conflict, reconnect)."""

    @abstractmethod
    async def _read_schema_version(self) -> int: ...

    @abstractmethod
    async def _apply_migration(self, tx: Transaction, version: int, script: str) -> bool:
        """Inside `write`: re-check the version under the backend's lock, run `script`, record `version`."""

    @abstractmethod
    async def _close(self) -> None: ...

    # ----- shared machinery

    async def _migrate(self) -> None:
        """Apply each missing migration in its own transaction (called by the backend's `connect`)."""
        current = await self.schema_version()
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(f"{self._location} has schema {current}; this bot knows up to {SCHEMA_VERSION}")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            script = migration_script(MIGRATIONS[version - 1], self.dialect)
            if await self.write(lambda tx, v=version, s=script: self._apply_migration(tx, v, s)):
                log.info("storage.migrated", extra={"location": self._location, "version": version})

    async def _with_retry(self, attempt: Callable[[], Awaitable[T]], kind: str) -> T:
        """One attempt at a time; back off and retry while the failure is transient."""
        if self._closed:
            raise RuntimeError("database is closed")
        deadline = time.monotonic() + self._retry_for
        backoff = _FIRST_BACKOFF_SECONDS
        tries = 0
        while True:
            tries += 1
            try:
                return await _shielded(attempt)
            except Exception as exc:
                if not self._is_transient(exc) or time.monotonic() + backoff > deadline:
                    raise
                log.warning("storage.locked_retry", extra={"kind": kind, "attempt": tries, "error": type(exc).__name__,
                                                           "backoff_s": round(backoff, 3)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)


async def _shielded(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run one attempt shielded: a caller cancelled mid-transaction (stop() cancelling a task) must not leave a
    connection inside BEGIN … with no COMMIT or ROLLBACK. The attempt finishes on its own; the caller still sees
    its cancellation."""
    task = asyncio.ensure_future(attempt())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_log_orphaned_failure)
        raise


def _log_orphaned_failure(task: asyncio.Future) -> None:
    """A shielded attempt whose caller was cancelled: nobody awaits it, so report its failure here."""
    if not task.cancelled() and task.exception() is not None:
        log.error("storage.orphaned_attempt_failed", exc_info=task.exception())

"""PostgreSQL backend (asyncpg): for several machines sharing one store, chosen by `DATABASE_URL`.

A small pool per process; each `write` takes one connection for one transaction (READ COMMITTED).
Statements arrive in the portable SQL of `bot.storage.dialect` and are rewritten to `$n` placeholders
there. The schema version lives in the `tutor_schema` table; migrations hold a transaction-scoped advisory
lock, so processes starting together apply each step once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from bot.storage.db import DEFAULT_RETRY_FOR_SECONDS, Database, IntegrityError, Row, T, Work
from bot.storage.dialect import POSTGRES, POSTGRES_BOOTSTRAP, Params, postgres_query, rowcount_of
from bot.storage.url import redact

log = logging.getLogger("bot.storage.db")

DEFAULT_POOL_SIZE = 5
_MIGRATION_LOCK = 7_416_817_239  # any constant bigint; shared by every process of this bot on the database


class ConnectionLost(Exception):
    """The server dropped the connection (restart, failover, terminated backend); it was thrown away."""


class CommitOutcomeUnknown(Exception):
    """The connection failed during COMMIT: the change may or may not be stored, so it is not retried."""


# A connection that failed this way is unusable: it is terminated so the pool opens a fresh one.
_BROKEN = (asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError, asyncpg.InternalClientError, ConnectionError)
# Worth running the whole transaction again: a conflict with another transaction, a lost or refused
# connection (server restart, failover, too many clients). Never a failed COMMIT: its outcome is unknown.
_TRANSIENT = (
    asyncpg.TransactionRollbackError,  # serialization failure, deadlock
    asyncpg.CannotConnectNowError,  # the server is starting or shutting down
    asyncpg.TooManyConnectionsError,
    ConnectionError,  # refused / reset while the server restarts (raised by pool.acquire)
    ConnectionLost,
)


def _usable(conn: asyncpg.Connection) -> bool:
    """False once the server closed the connection (the pool then detaches the proxy, which raises)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


class _PostgresTransaction:
    """`Transaction` on one pooled connection, inside BEGIN."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        query = postgres_query(sql)
        try:
            return rowcount_of(await self._conn.execute(query.sql, *query.bind(params)))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        query = postgres_query(sql)
        try:
            return list(await self._conn.fetch(query.sql, *query.bind(params)))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def script(self, sql: str) -> None:
        """Several statements without parameters (a migration): asyncpg's simple-query path."""
        await self._conn.execute(sql)


class PostgresDatabase(Database):
    """An asyncpg pool; every statement goes through the shared interface."""

    dialect = POSTGRES

    def __init__(self, pool: asyncpg.Pool, url: str, *, retry_for: float) -> None:
        super().__init__(redact(url), retry_for=retry_for)
        self._pool = pool

    @classmethod
    async def connect(
        cls, url: str, *, retry_for: float = DEFAULT_RETRY_FOR_SECONDS, pool_size: int = DEFAULT_POOL_SIZE,
        **_sqlite_only: Any,
    ) -> PostgresDatabase:
        """Connect a pool, create the bookkeeping table if needed and migrate to `SCHEMA_VERSION`."""
        pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, command_timeout=60)
        db = cls(pool, url, retry_for=retry_for)
        try:
            await db.write(db._bootstrap)
            await db._migrate()
        except BaseException:
            await db.close()
            raise
        log.info("storage.opened", extra={"backend": POSTGRES, "location": db.location,
                                          "schema": await db.schema_version()})
        return db

    async def _bootstrap(self, tx: _PostgresTransaction) -> None:
        await tx.execute(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        await tx.script(POSTGRES_BOOTSTRAP)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; one the server dropped is terminated (not reused) and reported as ConnectionLost."""
        async with self._pool.acquire() as conn:
            try:
                yield conn
            except CommitOutcomeUnknown:
                raise  # already handled, and never to be retried
            except Exception as exc:
                if isinstance(exc, _BROKEN) or not _usable(conn):
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()
                    raise ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
                raise

    async def _read(self, sql: str, params: Params) -> list[Row]:
        query = postgres_query(sql)
        async with self._connection() as conn:
            return list(await conn.fetch(query.sql, *query.bind(params)))

    async def _transaction(self, work: Work[T]) -> T:
        async with self._connection() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                result = await work(_PostgresTransaction(conn))
            except BaseException as exc:
                if not isinstance(exc, _BROKEN) and _usable(conn):
                    await transaction.rollback()
                raise
            try:
                await transaction.commit()
            except _BROKEN as exc:
                conn.terminate()
                raise CommitOutcomeUnknown(f"connection lost during COMMIT ({type(exc).__name__})") from exc
            return result

    def _is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, _TRANSIENT)

    async def _read_schema_version(self) -> int:
        (row,) = await self._read("SELECT version FROM tutor_schema", ())
        return int(row[0])

    async def _apply_migration(self, tx: Any, version: int, script: str) -> bool:
        await tx.execute(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        (current,) = await tx.fetch_one("SELECT version FROM tutor_schema")
        if current >= version:
            return False
        await tx.script(script)
        await tx.execute("UPDATE tutor_schema SET version = :version", {"version": version})
        return True

    async def _close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), 10)
        except TimeoutError:
            self._pool.terminate()

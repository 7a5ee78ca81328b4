"""Fixtures shared by several test modules.

`database` runs a test once per storage backend: a real SQLite file, and a real PostgreSQL server (one
private server for the whole session, a fresh schema per test; see tests/postgres_server.py). Without
PostgreSQL installed the postgres runs are skipped, unless TUTOR_TEST_POSTGRES=required (scripts/test sets
it), which turns that into a failure: CI must never silently test one backend.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.storage import Database, Repository
from tests.postgres_server import PostgresServer, PostgresUnavailable

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the session, stopped (and its files removed) at the end."""
    try:
        server = PostgresServer(os.environ.get("TUTOR_TEST_PG_ROOT") or None)
    except PostgresUnavailable as exc:
        if os.environ.get("TUTOR_TEST_POSTGRES") == "required":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def database_location(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh, empty database for `backend` lives."""
    if backend == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return await server.new_database_url()
    return str(tmp_path / "tutor.sqlite3")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend this run of the test uses."""
    return request.param


@pytest.fixture
async def database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated, empty database on `backend`."""
    db = await Database.open(await database_location(backend, request, tmp_path))
    yield db
    await db.close()


@pytest.fixture
async def repository(tmp_path):
    """A Repository on a fresh SQLite file (real file: WAL and locking behave as in production)."""
    db = await Database.open(tmp_path / "tutor.sqlite3")
    yield Repository(db)
    await db.close()

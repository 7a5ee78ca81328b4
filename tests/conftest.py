"""Fixtures shared by several test modules, and the seal between the suite and the user's set-up.

The suite must give the same result whatever the person running it has in `./.env` or in their shell:
`pytest_configure` removes every variable the bot, google-genai or the HTTP stack would read, before any
test module is imported, and every test runs in its own empty working directory, so a relative `.env`
(or `data/tutor.sqlite3`) is never the user's. `tests/test_sealed.py` proves it with a hostile `.env`.

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

from bot.config import Settings
from bot.storage import Database, Repository
from tests.postgres_server import PostgresServer, PostgresUnavailable

BACKENDS = ("sqlite", "postgres")

# Prefixes read by the bot's Settings, google-genai (GOOGLE_*, GEMINI_*) and discord.py's set-up.
SEALED_PREFIXES = ("DISCORD_", "GEMINI_", "GOOGLE_", "DATABASE_", "DEV_GUILD", "LOG_", "SSL_CERT_")
# Proxies and CA bundles change where httpx, aiohttp and websockets connect and whom they trust.
SEALED_NAMES = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "WS_PROXY", "WSS_PROXY",
                "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}


def sealed_variables(environ: os._Environ[str] | dict[str, str]) -> list[str]:
    """The names in `environ` that could change a test's outcome."""
    settings_names = {name.upper() for name in Settings.model_fields}
    return [name for name in environ
            if name.upper() in settings_names or name.upper().startswith(SEALED_PREFIXES)
            or name.upper() in SEALED_NAMES]


def pytest_configure(config: pytest.Config) -> None:
    """Strip the user's settings from this process (and so from every subprocess a test starts)."""
    for name in sealed_variables(os.environ):
        del os.environ[name]


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path, monkeypatch):
    """Each test starts in an empty directory of its own: no `.env`, no data folder of the user's."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the session, stopped (and its files removed) at the end."""
    root = os.environ.get("TUTOR_TEST_PG_ROOT")
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # each xdist worker runs its own server in its own folder
    try:
        server = PostgresServer(Path(root) / (worker or "main") if root else None)
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

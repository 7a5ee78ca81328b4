"""DATABASE_URL picks PostgreSQL, DATABASE_PATH (the default) SQLite; the URL's password never shows."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.__main__ import run_bot
from bot.config import ConfigError, load_settings
from bot.doctor import Doctor, postgres_problem
from bot.storage import Database
from bot.storage.postgres import PostgresDatabase
from bot.storage.sqlite import SQLiteDatabase
from bot.storage.url import redact

PASSWORD = "hunter2-not-in-logs"


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


def test_sqlite_is_the_default(tmp_path: Path) -> None:
    """No DATABASE_URL: the SQLite file at DATABASE_PATH."""
    settings = load_settings(discord_token="t", gemini_api_key="k", database_path=tmp_path / "x.sqlite3",
                             _env_file=None)
    assert settings.database_location == str(tmp_path / "x.sqlite3")


def test_database_url_wins_and_its_password_is_a_secret() -> None:
    """DATABASE_URL replaces the path; the URL and its password join the log scrubber's secrets."""
    url = f"postgresql://tutor:{PASSWORD}@db.example:5432/tutor"
    settings = load_settings(discord_token="t", gemini_api_key="k", database_url=url, _env_file=None)
    assert settings.database_location == url
    assert PASSWORD in settings.secret_values() and url in settings.secret_values()
    assert PASSWORD not in repr(settings)
    assert redact(url) == "postgresql://tutor:***@db.example:5432/tutor"


def test_unknown_database_scheme_is_one_sentence() -> None:
    """A MySQL URL (or a typo) is refused at start-up, naming the variable, without echoing it."""
    with pytest.raises(ConfigError) as caught:
        load_settings(discord_token="t", gemini_api_key="k", database_url=f"mysql://u:{PASSWORD}@h/db",
                      _env_file=None)
    assert "DATABASE_URL" in str(caught.value) and PASSWORD not in str(caught.value)


async def test_open_picks_the_backend_from_the_location(tmp_path: Path, postgres_server) -> None:
    """A path (or sqlite:///path) is SQLite, a postgresql:// URL is PostgreSQL; the location is safe to log."""
    cases = ((tmp_path / "a.sqlite3", SQLiteDatabase), (f"sqlite:///{tmp_path}/b.sqlite3", SQLiteDatabase),
             (with_password(await postgres_server.new_database_url()), PostgresDatabase))
    for location, kind in cases:
        db = await Database.open(location)
        try:
            assert isinstance(db, kind)
            assert PASSWORD not in db.location
        finally:
            await db.close()
    assert (tmp_path / "b.sqlite3").exists()


async def test_doctor_checks_postgres_without_printing_the_password(postgres_server) -> None:
    """`doctor`'s database line for a PostgreSQL URL: ok with the schema, the password never shown."""
    url = with_password(await postgres_server.new_database_url())
    settings = load_settings(discord_token="t", gemini_api_key="k", database_url=url, _env_file=None)
    result = await Doctor(settings).database()
    assert result.ok and "postgres" in result.detail and PASSWORD not in result.detail
    broken = load_settings(discord_token="t", gemini_api_key="k", _env_file=None,
                           database_url=url.replace(str(postgres_server.socket_dir), "/nonexistent"))
    result = await Doctor(broken).database()
    assert not result.ok and "DATABASE_URL" in result.detail and PASSWORD not in result.detail


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://tutor@db.example/tutor?sslmode=require&password=hunter2-not-in-logs",
     "postgresql://tutor@db.example/tutor?sslmode=require&password=***"),
    ("postgresql://tutor@db.example/tutor?PassWord=hunter2%2Dnot-in-logs",
     "postgresql://tutor@db.example/tutor?password=***"),
    ("postgresql://tutor:hunter2-not-in-logs@[::1]:5432/tutor", "postgresql://tutor:***@[::1]:5432/tutor"),
    ("postgresql://tutor:hunter2%2Dnot-in-logs@db/tutor?sslpassword=key-secret-1", "postgresql://tutor:***@db/tutor?sslpassword=***"),
], ids=["query", "query-encoded", "ipv6", "both"])
def test_every_form_of_the_password_is_masked_and_scrubbed(url: str, masked: str) -> None:
    """libpq/asyncpg also take `?password=` (and `sslpassword=`): masked in the location, and every written
    and decoded form is a secret for the log scrubber."""
    settings = load_settings(discord_token="t", gemini_api_key="k", database_url=url, _env_file=None)
    assert redact(url) == masked
    assert PASSWORD in settings.secret_values()


async def test_a_password_in_the_query_never_reaches_a_log_line_or_doctor(
        postgres_server, caplog: pytest.LogCaptureFixture) -> None:
    """The location logged at open/close and printed by `doctor` masks a `?password=` too."""
    url = f"{await postgres_server.new_database_url()}&password={PASSWORD}"
    caplog.set_level(logging.DEBUG)
    db = await Database.open(url)
    await db.close()
    settings = load_settings(discord_token="t", gemini_api_key="k", database_url=url, _env_file=None)
    result = await Doctor(settings).database()
    assert result.ok and PASSWORD not in result.detail, result.detail
    logged = [f"{r.getMessage()} {vars(r)}" for r in caplog.records]
    assert any("storage.opened" in line for line in logged)
    assert not [line for line in logged if PASSWORD in line]


async def test_doctor_says_in_words_what_is_wrong_with_the_postgres_url(postgres_server) -> None:
    """A database that does not exist, a user the server does not know, a host nobody answers at: each is one
    sentence naming the part to fix, without the driver's class names or the password."""
    url = with_password(await postgres_server.new_database_url())

    async def detail(database_url: str) -> str:
        settings = load_settings(discord_token="t", gemini_api_key="k", database_url=database_url, _env_file=None)
        result = await Doctor(settings).database()
        assert not result.ok and PASSWORD not in result.detail and "Error" not in result.detail, result.detail
        return result.detail

    assert "has no database called “nosuchdb”: create it (createdb nosuchdb)" in \
        await detail(url.replace("/postgres?", "/nosuchdb?"))
    assert "does not let user “nobody” in: check the user name in DATABASE_URL" in \
        await detail(url.replace(f"postgres:{PASSWORD}@", f"nobody:{PASSWORD}@"))
    assert await detail(f"postgresql://tutor:{PASSWORD}@127.0.0.1:1/tutor") == (
        "PostgreSQL: nothing answered at 127.0.0.1:1: check the address in DATABASE_URL and that the server is running")


def test_a_refused_password_and_an_unknown_host_are_told_apart() -> None:
    """What asyncpg raises for a wrong password, and the resolver for a host name that does not exist."""
    import socket

    import asyncpg

    url = f"postgresql://tutor:{PASSWORD}@db.example:5432/tutor"
    refused = postgres_problem(url, asyncpg.exceptions.InvalidPasswordError("password authentication failed"))
    assert refused == ("the server at db.example:5432 refused the password for user “tutor”: check the password "
                       "in DATABASE_URL")
    unknown = postgres_problem(url, socket.gaierror(-2, "Name or service not known"))
    assert unknown == "the host name “db.example” in DATABASE_URL could not be found: check the address"
    assert PASSWORD not in refused + unknown


@pytest.mark.parametrize("url", [f"postgresql://tutor:{PASSWORD}@db.example:notaport/tutor",
                                 f"postgresql://tutor:{PASSWORD}@db.example/tutor?sslmode=bogus"])
async def test_a_url_the_driver_cannot_read_is_a_setting_problem(url: str) -> None:
    """Not "the server refused the bot" (nothing was asked): a settings sentence, so `--processes` stops instead of
    restarting in a loop, and without the driver's words (they can quote a badly written password)."""
    settings = load_settings(discord_token="t", gemini_api_key="k", database_url=url, _env_file=None)
    with pytest.raises(ConfigError) as caught:
        await run_bot(settings)
    assert str(caught.value).startswith("DATABASE_URL is not valid: the PostgreSQL driver cannot read it.")
    assert PASSWORD not in str(caught.value)

"""`python -m bot doctor`: one line per check — ok, or which part failed and what to do about it.

The checks run in the order a first run breaks: this machine (Python, libopus, davey), the two secrets,
Discord (a real login over HTTP, then the bot's permissions in each server it is in), the database and a
real Gemini Live round trip. A check that needs an earlier one that failed is printed as skipped, so each
problem is told once. "Could not reach Discord" (this machine is offline) is never confused with
"Discord rejected the token". Secrets are reported present or missing, never printed.
"""

from __future__ import annotations

import asyncio
import ctypes.util
import importlib
import socket
import sqlite3
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import discord

from bot.config import Settings

MIN_PYTHON = (3, 11)
DISCORD_API = "https://discord.com/api/v10"
GEMINI_URL = "https://generativelanguage.googleapis.com"  # the SDK's default when GEMINI_BASE_URL is empty
# The invite README.md gives: voice, the transcription notice, status embeds, transcript exports.
INVITE_PERMISSIONS = discord.Permissions(view_channel=True, connect=True, speak=True, use_voice_activation=True,
                                         send_messages=True, embed_links=True, attach_files=True)
PERMISSION_NAMES = {"view_channel": "View Channels", "connect": "Connect", "speak": "Speak",
                    "use_voice_activation": "Use Voice Activity", "send_messages": "Send Messages",
                    "embed_links": "Embed Links", "attach_files": "Attach Files"}
NOT_CHECKED = "; the token was not checked yet"
REJECTED_LOGIN = ("Discord rejected DISCORD_TOKEN: copy the bot token again (Developer Portal → your application "
                  "→ Bot → Reset Token) into .env")


class Status(Enum):
    OK = "ok"
    PROBLEM = "problem"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one doctor check; `detail` is what a parent reads after the check's name."""

    name: str
    status: Status
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


def ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.OK, detail)


def problem(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.PROBLEM, detail)


def skipped(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.SKIPPED, detail)


Check = Callable[[], Awaitable[CheckResult]]


def invite_link(application_id: int | str) -> str:
    """The invite with exactly the permissions the bot needs (never Administrator)."""
    return (f"https://discord.com/oauth2/authorize?client_id={application_id}"
            f"&scope=bot+applications.commands&permissions={INVITE_PERMISSIONS.value}")


def discord_unreachable(api: str = DISCORD_API) -> str:
    """The words for "this machine cannot reach Discord" (offline, DNS, firewall), distinct from a bad token."""
    return f"could not reach Discord ({urlsplit(api).hostname}): check that this machine is online"


def database_problem(path: Path, exc: BaseException) -> str:
    """Why the database cannot be used, in words, with what to change."""
    folder = path.parent if str(path.parent) else Path(".")
    if isinstance(exc, PermissionError) or "readonly" in str(exc) or "unable to open" in str(exc):
        return (f"cannot create or write {path}: check DATABASE_PATH, and that this user may write "
                f"to the folder {folder}")
    if isinstance(exc, FileNotFoundError | NotADirectoryError | FileExistsError):
        return f"cannot create the folder {folder} for {path.name}: check DATABASE_PATH"
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return f"{path} is not a database file: point DATABASE_PATH at another file name"
    if isinstance(exc, OSError):
        return f"cannot use {path} ({exc.strerror or 'system error'}): check DATABASE_PATH"
    return f"cannot open {path}: check DATABASE_PATH (LOG_LEVEL=DEBUG shows the details)"


def postgres_problem(url: str, exc: BaseException) -> str:
    """Why the PostgreSQL server in DATABASE_URL cannot be used, in words (no driver class names), with what to
    check. Never echoes the URL's password: only the user, host, port and database name are named."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))  # libpq's ?host=/run/postgresql&port=5433 (a Unix socket) wins
    try:
        port = query.get("port") or parts.port or 5432
    except ValueError:
        port = 5432
    where = query.get("host") or parts.hostname or "localhost"
    host = where if where.startswith("/") else f"{where}:{port}"  # a path is a Unix socket folder
    user, database = parts.username or "the user", parts.path.lstrip("/") or "the database"
    name = type(exc).__name__
    if name == "InvalidPasswordError":
        return f"the server at {host} refused the password for user “{user}”: check the password in DATABASE_URL"
    if name == "InvalidCatalogNameError":
        return (f"the server at {host} has no database called “{database}”: create it (createdb {database}) or fix "
                "the name at the end of DATABASE_URL")
    if name == "InvalidAuthorizationSpecificationError":
        return (f"the server at {host} does not let user “{user}” in: check the user name in DATABASE_URL and "
                "the server's pg_hba.conf")
    if name == "InsufficientPrivilegeError":
        return (f"user “{user}” may not create the bot's tables in “{database}”: give it the rights (GRANT CREATE) "
                "or put the database's owner in DATABASE_URL")
    if isinstance(exc, socket.gaierror):
        return f"the host name “{where}” in DATABASE_URL could not be found: check the address"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing answered at {host}: check the address in DATABASE_URL and that the server is running"
    if isinstance(exc, TimeoutError):
        return (f"the server at {host} did not answer in time: check the address in DATABASE_URL, the server and "
                "the network")
    if isinstance(exc, OSError):
        return (f"could not connect to {host} ({exc.strerror or 'network error'}): check the address in DATABASE_URL "
                "and that the server is running")
    return (f"the server at {host} could not be used ({name}): check DATABASE_URL (LOG_LEVEL=DEBUG shows the "
            "details)")


class Doctor:
    """Runs the checks against one set of settings; `discord_api` is a parameter so tests can use a fake."""

    def __init__(self, settings: Settings, *, discord_api: str | None = None, http_timeout: float = 10.0,
                 live_timeout: float = 20.0) -> None:
        self._settings = settings
        self._discord_api = (discord_api or DISCORD_API).rstrip("/")
        self._http_timeout = http_timeout
        self._live_timeout = live_timeout
        self._bot_user: dict[str, Any] | None = None  # GET /users/@me after a good login

    def checks(self) -> list[Check]:
        """Every check, in the order a first run needs them."""
        return [self.python, self.libopus, self.davey, self.discord_token_set, self.gemini_key_set,
                self.discord_login, self.discord_servers, self.database, self.shards, self.gemini_live]

    async def run(self, checks: list[Check] | None = None) -> int:
        """Run the checks, print one line each and a last line; 0 only if nothing is a problem."""
        problems = 0
        for check in checks if checks is not None else self.checks():
            try:
                result = await check()
            except Exception as exc:  # a check with a bug must not hide the others
                name = getattr(check, "__name__", "check").replace("_", " ")
                result = problem(name, f"the check itself failed ({type(exc).__name__}); "
                                 "run again with LOG_LEVEL=DEBUG and report it")
            problems += result.status is Status.PROBLEM
            print(f"{result.status.value:<8} {result.name}: {result.detail}")
        print("all checks passed" if not problems else
              f"{problems} problem{'s' if problems > 1 else ''} found: fix the lines marked “problem” above")
        return 1 if problems else 0

    # this machine -------------------------------------------------------------------------------
    async def python(self) -> CheckResult:
        """The bot needs Python 3.11+."""
        version = ".".join(map(str, sys.version_info[:3]))
        if sys.version_info >= MIN_PYTHON:
            return ok("python", version)
        return problem("python", f"this is Python {version}: install Python 3.11 or newer")

    async def libopus(self) -> CheckResult:
        """discord.py needs libopus to encode and decode voice."""
        import discord.opus

        try:
            discord.opus._load_default()
            version = discord.opus._lib.opus_get_version_string().decode()  # only to show it
        except Exception:
            where = "is installed but cannot be loaded" if ctypes.util.find_library("opus") else "is not installed"
            return problem("libopus", f"the Opus voice library {where}: run sudo apt-get install -y libopus0")
        return ok("libopus", version)

    async def davey(self) -> CheckResult:
        """Without `davey` discord.py cannot join DAVE (end-to-end encrypted) voice channels."""
        try:
            davey = importlib.import_module("davey")
        except ImportError:
            return problem("davey", "not installed (needed for encrypted voice): run scripts/run again, it "
                           "installs it")
        return ok("davey", f"version {getattr(davey, '__version__', '?')}")

    # secrets ------------------------------------------------------------------------------------
    async def discord_token_set(self) -> CheckResult:
        if self._settings.discord_token is None:
            return problem("DISCORD_TOKEN", "not set: put the bot token (Developer Portal → your application → "
                           "Bot → Reset Token) in .env")
        return ok("DISCORD_TOKEN", "set (not shown)")

    async def gemini_key_set(self) -> CheckResult:
        if self._settings.gemini_api_key is None:
            return problem("GEMINI_API_KEY", "not set: put an API key from Google AI Studio "
                           "(https://aistudio.google.com/apikey) in .env")
        return ok("GEMINI_API_KEY", "set (not shown)")

    # Discord ------------------------------------------------------------------------------------
    async def _discord_get(self, path: str) -> tuple[int, Any]:
        """GET one Discord API path with the bot token; (status, parsed JSON or None)."""
        assert self._settings.discord_token is not None
        headers = {"Authorization": f"Bot {self._settings.discord_token.get_secret_value()}",
                   "User-Agent": f"DiscordBot (https://github.com/Rapptz/discord.py, {discord.__version__})"}
        timeout = aiohttp.ClientTimeout(total=self._http_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http, \
                http.get(self._discord_api + path, headers=headers) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:  # Cloudflare's HTML error pages
                body = None
            return response.status, body

    async def discord_login(self) -> CheckResult:
        """A real login: GET /users/@me with the token, as discord.py's own login does."""
        name = "discord login"
        if self._settings.discord_token is None:
            return skipped(name, "needs DISCORD_TOKEN")
        try:
            status, body = await self._discord_get("/users/@me")
        except (aiohttp.ClientError, OSError, TimeoutError):
            return problem(name, discord_unreachable(self._discord_api) + NOT_CHECKED)
        if status == 200 and isinstance(body, dict):
            self._bot_user = body
            return ok(name, f"Discord accepted the token: this is the bot “{body.get('username', '?')}” "
                      f"(application id {body.get('id', '?')})")
        if status == 401:
            return problem(name, REJECTED_LOGIN)
        if status == 429:
            wait = body.get("retry_after", "a few") if isinstance(body, dict) else "a few"
            return problem(name, f"Discord asked to slow down (too many logins): try again in {wait} seconds")
        return problem(name, f"Discord answered with an error (HTTP {status}): try again in a few minutes; "
                       "the token was not checked yet")

    async def discord_servers(self) -> CheckResult:
        """Where the bot can see a server, it has the invite's permissions there (server-wide)."""
        name = "discord servers"
        if self._bot_user is None:
            return skipped(name, "needs a Discord login")
        invite = invite_link(self._bot_user.get("id", "APP_ID"))
        try:
            status, guilds = await self._discord_get("/users/@me/guilds")
        except (aiohttp.ClientError, OSError, TimeoutError):
            return problem(name, discord_unreachable(self._discord_api))
        if status != 200 or not isinstance(guilds, list):
            return problem(name, f"Discord did not list the bot's servers (HTTP {status}): try again later")
        dev_guild = self._settings.dev_guild_id
        if not guilds:
            return problem(name, f"the bot is in no server yet: open {invite} and add it to your server")
        if dev_guild is not None and all(int(g.get("id", 0)) != dev_guild for g in guilds):
            return problem(name, f"the bot is not in the server DEV_GUILD_ID={dev_guild}: add it with {invite} "
                           "(or correct DEV_GUILD_ID)")
        lacking = []
        for guild in guilds:
            have = discord.Permissions(int(guild.get("permissions", 0)))
            missing = [label for flag, label in PERMISSION_NAMES.items() if not getattr(have, flag)]
            if missing and not have.administrator:
                lacking.append(f"in “{guild.get('name', guild.get('id'))}” it lacks {', '.join(missing)}")
        if lacking:
            return problem(name, "; ".join(lacking) + ": give the bot's role those permissions (Server Settings → "
                           f"Roles) or invite it again with {invite}")
        names = ", ".join(f"“{g.get('name', g.get('id'))}”" for g in guilds[:5])
        more = f" and {len(guilds) - 5} more" if len(guilds) > 5 else ""
        return ok(name, f"in {len(guilds)} server{'s' if len(guilds) > 1 else ''} ({names}{more}) with every "
                  "permission it needs")

    # the rest -----------------------------------------------------------------------------------
    async def database(self) -> CheckResult:
        """The database file must be writable and migrated to the current schema."""
        from bot.storage.db import SCHEMA_VERSION, Database

        if self._settings.database_url is not None:
            return await self.postgres_database()
        path = Path(self._settings.database_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent):
                pass
            db = await Database.open(path)
            try:
                version = await db.schema_version()
            finally:
                await db.close()
        except (OSError, sqlite3.Error) as exc:
            return problem("database", database_problem(path, exc))
        if version != SCHEMA_VERSION:
            return problem("database", f"{path} has schema {version} but this bot needs {SCHEMA_VERSION}: "
                           "update the bot (git pull) or point DATABASE_PATH at another file")
        return ok("database", f"{path} can be written (schema {version})")

    async def postgres_database(self) -> CheckResult:
        """DATABASE_URL: the server must answer, accept the user and hold (or take) the current schema."""
        from bot.storage.db import SCHEMA_VERSION, Database

        try:
            db = await Database.open(self._settings.database_location, retry_for=2.0)
            try:
                version, where = await db.schema_version(), db.location  # the URL without its password
            finally:
                await db.close()
        except Exception as exc:
            return problem("database", f"PostgreSQL: {postgres_problem(self._settings.database_location, exc)}")
        if version != SCHEMA_VERSION:
            return problem("database", f"{where} has schema {version} but this bot needs {SCHEMA_VERSION}: "
                           "update the bot (git pull) on every machine that shares it")
        return ok("database", f"{where} (PostgreSQL) can be written (schema {version})")

    async def shards(self) -> CheckResult:
        """Which shards this process runs (SHARD_COUNT/SHARD_IDS; `--processes N` sets them per process)."""
        scope = self._settings.shard_scope
        detail = scope.describe()
        if scope.count is not None and not scope.everything:
            detail += "; the other shards need processes of their own with the same SHARD_COUNT"
        return ok("shards", detail)

    async def gemini_live(self) -> CheckResult:
        """Can this machine reach Gemini, and does a real Live round trip with the key answer?"""
        name = "gemini live"
        settings = self._settings
        if settings.gemini_api_key is None:
            return skipped(name, "needs GEMINI_API_KEY")
        url = urlsplit(settings.gemini_base_url or GEMINI_URL)
        host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
        try:
            async with asyncio.timeout(self._http_timeout):
                _, writer = await asyncio.open_connection(host, port)
            writer.close()
        except (OSError, TimeoutError):
            return problem(name, f"could not reach Gemini ({host}): check that this machine is online; "
                           "the API key was not checked yet")
        from bot.live.check import LiveCheckRequest, run_live_check

        report = await run_live_check(settings, LiveCheckRequest(text="Say hello in three words.",
                                                                 timeout=self._live_timeout))
        if not report.ok:
            return problem(name, report.reason.rstrip("."))
        return ok(name, f"{settings.gemini_model} {report.setup_reply} and answered: first audio after "
                  f"{report.first_audio_ms:.0f} ms, {report.reply_seconds:.1f} s of reply")


async def run_doctor(settings: Settings, **options: Any) -> int:
    """Run every check with `Doctor(settings, **options)`; the process exit code."""
    return await Doctor(settings, **options).run()

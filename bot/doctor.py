"""`python -m bot doctor`: one line per check, ok or the problem and how to fix it.

Each check is a small function returning a `CheckResult`; `run_doctor` runs them in order and
exits non-zero if any failed. Secrets are reported present or missing, never printed.
"""

from __future__ import annotations

import ctypes.util
import importlib
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bot.config import Settings


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one doctor check."""

    name: str
    ok: bool
    detail: str


Check = Callable[[Settings], Awaitable[CheckResult]]


async def check_python(settings: Settings) -> CheckResult:
    """The bot needs Python 3.11+."""
    version = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info >= (3, 11)
    return CheckResult("python", ok, version if ok else f"{version}: install Python 3.11 or newer")


async def check_libopus(settings: Settings) -> CheckResult:
    """discord.py needs libopus to encode and decode voice."""
    import discord.opus

    try:
        discord.opus._load_default()
        version = discord.opus._lib.opus_get_version_string().decode()  # only to show it
    except Exception:
        found = ctypes.util.find_library("opus")
        return CheckResult("libopus", False, f"not loadable ({found or 'not found'}): "
                           "sudo apt-get install -y libopus0")
    return CheckResult("libopus", True, version)


async def check_davey(settings: Settings) -> CheckResult:
    """Without `davey` discord.py cannot join DAVE (end-to-end encrypted) voice channels."""
    try:
        davey = importlib.import_module("davey")
    except ImportError:
        return CheckResult("davey", False, "not installed: run scripts/run again (it installs davey)")
    return CheckResult("davey", True, f"version {getattr(davey, '__version__', '?')}")


async def check_secrets(settings: Settings) -> CheckResult:
    """Both secrets must be present; their values are never shown."""
    missing = [name.upper() for name in ("discord_token", "gemini_api_key") if getattr(settings, name) is None]
    if missing:
        return CheckResult("secrets", False, f"{' and '.join(missing)} not set: add to .env (see .env.example)")
    return CheckResult("secrets", True, "DISCORD_TOKEN and GEMINI_API_KEY present")


async def check_database(settings: Settings) -> CheckResult:
    """The database must be reachable and writable and migrated to the current schema."""
    from bot.storage.db import SCHEMA_VERSION, Database

    if settings.database_url is not None:
        where, hint = "DATABASE_URL", "check DATABASE_URL, the server and the user's rights"
    else:
        where, hint = str(settings.database_path), "check DATABASE_PATH and folder permissions"
    try:
        if settings.database_url is None:
            path = Path(settings.database_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent):
                pass
        db = await Database.open(settings.database_location)
        try:
            version = await db.schema_version()
            where = db.location  # a PostgreSQL URL without its password
        finally:
            await db.close()
    except Exception as exc:
        detail = f"{exc.__class__.__name__}: {exc}"
        for secret in settings.secret_values():  # a driver may echo the URL, password and all
            detail = detail.replace(secret, "***")
        return CheckResult("database", False, f"{where}: {detail} ({hint})")
    if version != SCHEMA_VERSION:
        return CheckResult("database", False, f"{where}: schema {version}, expected {SCHEMA_VERSION}")
    return CheckResult("database", True, f"{where} ({db.dialect}) writable, schema {version}")


async def check_shards(settings: Settings) -> CheckResult:
    """Which shards this process would run (SHARD_COUNT/SHARD_IDS; `--processes N` sets them per process)."""
    scope = settings.shard_scope
    detail = scope.describe()
    if scope.count is not None and not scope.everything:
        detail += "; the other shards need processes of their own with the same SHARD_COUNT"
    return CheckResult("shards", True, detail)


async def check_live(settings: Settings) -> CheckResult:
    """A real round trip to Gemini Live: connect, say hello, time the first audio byte."""
    if settings.gemini_api_key is None:
        return CheckResult("gemini live", False, "skipped: GEMINI_API_KEY not set")
    from bot.live.check import LiveCheckRequest, run_live_check

    report = await run_live_check(settings, LiveCheckRequest(text="Say hello in three words.", timeout=20.0))
    if not report.ok:
        return CheckResult("gemini live", False, report.reason)
    return CheckResult("gemini live", True, f"{settings.gemini_model}: first audio after "
                       f"{report.first_audio_ms:.0f} ms, {report.reply_seconds:.1f} s of reply")


CHECKS: tuple[Check, ...] = (check_python, check_libopus, check_davey, check_secrets, check_database, check_shards,
                             check_live)


async def run_doctor(settings: Settings, checks: tuple[Check, ...] = CHECKS) -> int:
    """Run every check, print one line each, return 0 only if all passed."""
    failed = 0
    for check in checks:
        try:
            result = await check(settings)
        except Exception as exc:
            result = CheckResult(check.__name__.removeprefix("check_"), False, f"{exc.__class__.__name__}: {exc}")
        failed += not result.ok
        print(f"{'ok     ' if result.ok else 'problem'}  {result.name}: {result.detail}")
    print("all checks passed" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0

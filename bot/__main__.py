"""Command line: `python -m bot` runs the bot; `doctor` and `live-check` help a parent set it up.

`doctor` and `live-check` print their findings as sentences and nothing else: log lines would only say
the same thing again in an operator's words (`LOG_LEVEL=DEBUG` shows them, on stderr). Running the bot
logs at `LOG_LEVEL`; if it cannot start, one sentence on stderr says which part failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from bot.config import ConfigError, LiveCheckSettings, PartialSettings, Settings, load_settings
from bot.log import setup_logging

EXIT_CONFIG = 78  # EX_CONFIG: a setting is missing or wrong
EXIT_STARTUP = 69  # EX_UNAVAILABLE: a dependency (database, Discord) cannot be reached

log = logging.getLogger("bot")


class StartupError(Exception):
    """The bot cannot start for a reason outside the settings; the message is one sentence."""


def stop_on_sigterm() -> Callable[[], None]:
    """SIGTERM (systemd, `docker stop`, `--processes`) stops the bot the way Ctrl-C does: the running task is
    cancelled once, so `TutorBot.close()` says goodbye, drains the turn queues and closes the session rows
    before the gateway and the database close. Returns the function that removes the handler."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None

    def on_sigterm() -> None:
        if not task.cancelling():  # a second SIGTERM must not cut the goodbye short
            log.info("bot.stopping", extra={"signal": "SIGTERM"})
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    return lambda: loop.remove_signal_handler(signal.SIGTERM)


async def run_bot(settings: Settings) -> None:
    """Open the database, then hand everything to the Discord client until it stops (or SIGTERM)."""
    import aiohttp
    import discord

    from bot.client import TutorBot
    from bot.doctor import REJECTED_LOGIN, database_problem, discord_unreachable, postgres_problem
    from bot.storage.db import Database

    try:
        db = await Database.open(settings.database_location)
    except (OSError, sqlite3.Error) as exc:
        log.debug("storage.open_failed", exc_info=True)
        if settings.database_url is not None:
            raise StartupError(f"the bot cannot use PostgreSQL: {postgres_problem(settings.database_location, exc)}.") \
                from None
        raise StartupError(f"the bot {database_problem(settings.database_path, exc)}.") from None
    except ValueError:  # asyncpg could not read the URL (a port that is not a number, an unknown sslmode, …)
        if settings.database_url is None:
            raise
        log.debug("storage.open_failed", exc_info=True)
        # The driver's own words are left out: with an unencoded @ or / they can quote part of the password.
        raise ConfigError("DATABASE_URL is not valid: the PostgreSQL driver cannot read it. It should look like "
                          "postgresql://user:password@host:5432/tutor, with a port that is a number and any @ : / "
                          "in the password written as %40 %3A %2F; fix it in .env (see .env.example) or the "
                          "environment.") from None
    except Exception as exc:  # asyncpg: the server refused the user, the database does not exist, …
        if settings.database_url is None:
            raise
        log.debug("storage.open_failed", exc_info=True)
        raise StartupError(f"the bot cannot use PostgreSQL: {postgres_problem(settings.database_location, exc)}.") \
            from None
    remove_handler = stop_on_sigterm()
    try:
        async with TutorBot(settings=settings, db=db) as client:
            try:
                await client.start(settings.discord_token.get_secret_value())
            except discord.LoginFailure:
                raise ConfigError(f"{REJECTED_LOGIN}.") from None
            except (aiohttp.ClientError, OSError) as exc:  # aiohttp's connection errors are OSErrors too
                log.debug("discord.unreachable", exc_info=exc)
                raise StartupError(f"the bot {discord_unreachable()}.") from None
    finally:
        remove_handler()
        await db.close()


def quiet_logging(settings: Settings) -> None:
    """For `doctor` and `live-check`: no log lines unless LOG_LEVEL=DEBUG, and then on stderr."""
    if settings.log_level == "DEBUG":
        setup_logging("DEBUG", settings.log_format, settings.secret_values(), stream=sys.stderr)
    else:
        setup_logging(logging.CRITICAL + 1, settings.log_format, settings.secret_values(), stream=sys.stderr)


def run_processes(settings: Settings, processes: int, log_dir: Path) -> int:
    """`--processes N`: a supervisor starting N copies of `run`, each with its own SHARD_IDS (bot.launcher)."""
    from bot.launcher import run_processes as supervise
    from bot.shards import split_shards

    if processes < 1:
        print("Cannot start: --processes needs a whole number of 1 or more (one per core is a good start).",
              file=sys.stderr)
        return EXIT_CONFIG
    if settings.shard_ids is not None:
        print("Cannot start: SHARD_IDS is set, but --processes gives each process its shards itself; "
              "leave SHARD_IDS empty (SHARD_COUNT may stay).", file=sys.stderr)
        return EXIT_CONFIG
    try:
        split_shards(settings.shard_count or processes, processes)
    except ValueError as exc:
        print(f"Cannot start: {exc}.", file=sys.stderr)
        return EXIT_CONFIG
    return supervise(processes, settings.shard_count, log_dir)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    # Accepted before or after `run`; SUPPRESS keeps the subcommand from resetting a value given before it.
    scale = argparse.ArgumentParser(add_help=False)
    scale.add_argument("--processes", type=int, default=argparse.SUPPRESS, metavar="N",
                       help="run N bot processes (one per core), each with its own shards and log file")
    scale.add_argument("--log-dir", type=Path, default=argparse.SUPPRESS,
                       help="where --processes writes each process's log (default: logs)")
    parser.add_argument("--processes", type=int, default=None, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", type=Path, default=Path("logs"), help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the bot (the default)", parents=[scale])
    sub.add_parser("doctor", help="check this machine, the settings, Discord, the database and Gemini Live")
    live = sub.add_parser("live-check", help="one round trip to Gemini Live, with timings")
    from bot.live.check import add_arguments

    add_arguments(live)
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from bot.doctor import run_doctor

        try:
            settings = load_settings(PartialSettings)
        except ConfigError as exc:
            print(f"problem  settings: {exc}")
            return 1
        settings.export_to_process()
        quiet_logging(settings)
        return asyncio.run(run_doctor(settings))

    try:
        settings = load_settings(LiveCheckSettings if args.command == "live-check" else Settings)
    except ConfigError as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    settings.export_to_process()

    if args.command == "live-check":
        from bot.live.check import run_from_args

        quiet_logging(settings)
        return asyncio.run(run_from_args(settings, args))

    if args.processes is not None:
        return run_processes(settings, args.processes, args.log_dir)

    from bot.launcher import follow_supervisor

    follow_supervisor()  # a child of `--processes`: stop when the supervisor dies
    setup_logging(settings.log_level, settings.log_format, settings.secret_values())
    try:
        asyncio.run(run_bot(settings))
    except ConfigError as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        log.info("bot.stopped", extra={"reason": "keyboard interrupt"})
    except asyncio.CancelledError:  # SIGTERM, after the same graceful close
        log.info("bot.stopped", extra={"reason": "SIGTERM"})
    return 0


if __name__ == "__main__":
    sys.exit(main())

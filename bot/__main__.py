"""Command line: `python -m bot` runs the bot; `doctor` and `live-check` help an operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from bot.config import ConfigError, PartialSettings, Settings, load_settings
from bot.log import setup_logging

EXIT_CONFIG = 78  # EX_CONFIG: a setting is missing or wrong
EXIT_STARTUP = 69  # EX_UNAVAILABLE: a dependency (database, Discord) cannot be reached

log = logging.getLogger("bot")


async def run_bot(settings: Settings) -> None:
    """Open the database, then hand everything to the Discord client until it stops."""
    import discord

    from bot.client import TutorBot
    from bot.storage.db import Database

    db = await Database.open(settings.database_location)
    try:
        async with TutorBot(settings=settings, db=db) as client:
            try:
                await client.start(settings.discord_token.get_secret_value())
            except discord.LoginFailure:
                raise ConfigError("Discord rejected DISCORD_TOKEN: copy the bot token again from the "
                                  "Developer Portal (Bot → Reset Token) into .env.") from None
    finally:
        await db.close()


def run_processes(settings: Settings, processes: int, log_dir: Path) -> int:
    """`--processes N`: a supervisor starting N copies of `run`, each with its own SHARD_IDS (bot.launcher)."""
    from bot.launcher import run_processes as supervise
    from bot.shards import split_shards

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
    scale = argparse.ArgumentParser(add_help=False)
    scale.add_argument("--processes", type=int, default=None, metavar="N",
                       help="run N bot processes (one per core), each with its own shards and log file")
    scale.add_argument("--log-dir", type=Path, default=Path("logs"), help="where --processes writes each log")
    parser.add_argument("--processes", type=int, default=None, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", type=Path, default=Path("logs"), help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the bot (the default)", parents=[scale])
    sub.add_parser("doctor", help="check this machine, the settings, the database and Gemini Live")
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
        setup_logging("WARNING", settings.log_format, settings.secret_values())
        return asyncio.run(run_doctor(settings))

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    settings.export_to_process()

    if args.command == "live-check":
        from bot.live.check import run_from_args

        setup_logging("WARNING", settings.log_format, settings.secret_values())
        return asyncio.run(run_from_args(settings, args))

    if args.processes is not None:
        return run_processes(settings, args.processes, args.log_dir)

    setup_logging(settings.log_level, settings.log_format, settings.secret_values())
    try:
        asyncio.run(run_bot(settings))
    except ConfigError as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:  # aiohttp's connection errors are OSErrors too
        print(f"Cannot start: could not reach Discord or open the database ({exc.__class__.__name__}: {exc}).",
              file=sys.stderr)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        log.info("bot.stopped", extra={"reason": "keyboard interrupt"})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""README.md as a parent follows it: every command it names exists as printed, and every command exists in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from discord import app_commands

from bot.client import INITIAL_EXTENSIONS
from bot.storage.db import Database
from tests.bot.test_client import bot_over

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
GROUPS = ("tutor-settings", "transcripts", "tutor")  # longest first: "tutor" is a prefix of "tutor-settings"


@pytest.fixture
async def tree(tmp_path):
    db = await Database.open(tmp_path / "tutor.sqlite3")
    bot = bot_over(db)
    for extension in INITIAL_EXTENSIONS:
        await bot.load_extension(extension)
    yield bot.tree
    await bot.close()
    await db.close()


def slash_commands(tree) -> dict[str, app_commands.Command | app_commands.Group]:
    return {command.qualified_name: command for command in tree.walk_commands()}


async def test_every_slash_command_in_the_readme_exists(tree):
    """`/tutor-settings daily-budget …`, `/transcripts delete session:…`: each names a real command."""
    known = slash_commands(tree)
    for match in re.finditer(r"`/(" + "|".join(GROUPS) + r")((?: [a-z][a-z-]*)*)", README):
        words = [match.group(1), *match.group(2).split()]
        named = [" ".join(words[:n]) for n in range(len(words), 0, -1) if " ".join(words[:n]) in known]
        assert named and (len(words) == 1 or named[0] != words[0]), f"README names /{' '.join(words)}"


async def test_every_slash_command_is_in_the_readme(tree):
    """A command a moderator or kid can type is explained in README (a later issue's command too)."""
    for name, command in slash_commands(tree).items():
        if isinstance(command, app_commands.Group):
            continue
        words = name.split()
        spellings = [f"`/{name}"] + [f"`{' '.join(words[n:])}" for n in range(1, len(words))]
        assert any(spelling in README for spelling in spellings), f"/{name} is not in README.md"


def test_scripts_bench_names_real_benchmarks():
    """`scripts/bench X` runs `bench/X.py`: each one README mentions exists."""
    for name in set(re.findall(r"scripts/bench ([a-z0-9_]+)", README)):
        assert (ROOT / "bench" / f"{name}.py").is_file(), f"scripts/bench {name}"


def test_env_example_commands_use_the_projects_interpreter():
    """A command .env.example suggests runs as printed: with the project's .venv, not the system python."""
    for line in ENV_EXAMPLE.splitlines():
        for command in re.findall(r"`([^`]*python[^`]*)`", line):
            assert command.startswith(".venv/bin/python "), command

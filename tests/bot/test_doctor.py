"""`python -m bot doctor`: each check against real stand-ins (a fake Discord API, the fake Live server, real SQLite)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import discord
import pytest

from bot.config import PartialSettings, load_settings
from bot.doctor import INVITE_PERMISSIONS, CheckResult, Doctor, Status, invite_link, ok, problem
from tests.fake_live import FakeLiveServer, make_client_settings
from tests.helpers import FakeDiscordAPI

ROOT = Path(__file__).resolve().parents[2]
EVERYTHING = INVITE_PERMISSIONS


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: connecting is refused, as on a machine that is offline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def doctor_settings(**values: object) -> PartialSettings:
    return load_settings(PartialSettings, _env_file=None, **values)  # type: ignore[return-value]


@pytest.fixture
async def discord_api():
    async with FakeDiscordAPI() as fake:
        yield fake


async def test_token_accepted_by_a_real_http_login(discord_api):
    """A good token: Discord's answer names the bot; the login sent `Bot <token>` and a User-Agent."""
    doctor = Doctor(doctor_settings(discord_token="test-token"), discord_api=discord_api.base_url)
    result = await doctor.discord_login()
    assert result.ok, result.detail
    assert "“Tutor”" in result.detail and discord_api.bot_id in result.detail
    assert discord_api.requests[0][0] == "/api/v10/users/@me" and discord_api.requests[0][1]


async def test_rejected_token_says_so_and_how_to_fix_it(discord_api):
    """A made-up token is a problem naming DISCORD_TOKEN and where to get a new one; it is never printed."""
    doctor = Doctor(doctor_settings(discord_token="made-up-token"), discord_api=discord_api.base_url)
    result = await doctor.discord_login()
    assert result.status is Status.PROBLEM
    assert result.detail.startswith("Discord rejected DISCORD_TOKEN: copy the bot token again")
    assert "made-up-token" not in result.detail


@pytest.mark.parametrize("how", ["refused", "stall"])
async def test_unreachable_discord_is_not_a_rejected_token(discord_api, how):
    """Offline (refused or no answer in time) says it could not reach Discord — not that the token is bad."""
    discord_api.mode = "stall"
    api = f"http://127.0.0.1:{closed_port()}/api/v10" if how == "refused" else discord_api.base_url
    doctor = Doctor(doctor_settings(discord_token="test-token"), discord_api=api, http_timeout=0.3)
    result = await doctor.discord_login()
    assert result.status is Status.PROBLEM
    assert result.detail == ("could not reach Discord (127.0.0.1): check that this machine is online; "
                             "the token was not checked yet")


@pytest.mark.parametrize(("mode", "words"), [("outage", "Discord answered with an error (HTTP 502)"),
                                             ("rate_limited", "try again in 2.5 seconds")])
async def test_discord_trouble_is_not_a_rejected_token(discord_api, mode, words):
    """A 502 HTML page or a 429 is told as Discord's trouble, never as a bad token."""
    discord_api.mode = mode
    result = await Doctor(doctor_settings(discord_token="test-token"), discord_api=discord_api.base_url).discord_login()
    assert result.status is Status.PROBLEM and words in result.detail and "rejected" not in result.detail


async def test_checks_that_need_a_secret_are_skipped_not_failed_twice(discord_api):
    """No token: the token line is the one problem; login and servers are skipped, Discord is never called."""
    doctor = Doctor(doctor_settings(), discord_api=discord_api.base_url)
    assert (await doctor.discord_token_set()).status is Status.PROBLEM
    assert (await doctor.discord_login()).status is Status.SKIPPED
    assert (await doctor.discord_servers()).status is Status.SKIPPED
    assert (await doctor.gemini_live()).status is Status.SKIPPED
    assert discord_api.requests == []


async def logged_in(discord_api: FakeDiscordAPI, **settings: object) -> Doctor:
    doctor = Doctor(doctor_settings(discord_token="test-token", **settings), discord_api=discord_api.base_url)
    assert (await doctor.discord_login()).ok
    return doctor


async def test_bot_in_no_server_gets_the_invite_link(discord_api):
    """No server yet: the problem line carries the invite with the bot's own application id."""
    result = await (await logged_in(discord_api)).discord_servers()
    assert result.status is Status.PROBLEM
    assert "the bot is in no server yet" in result.detail and invite_link(discord_api.bot_id) in result.detail


async def test_missing_permissions_are_named_per_server(discord_api):
    """A server where the bot's role lacks Connect and Speak is named with exactly those two."""
    discord_api.add_guild("Family", EVERYTHING)
    lacking = discord.Permissions(EVERYTHING.value)
    lacking.connect = lacking.speak = False
    discord_api.add_guild("Cousins", lacking)
    result = await (await logged_in(discord_api)).discord_servers()
    assert result.status is Status.PROBLEM
    assert "in “Cousins” it lacks Connect, Speak: give the bot's role those permissions" in result.detail
    assert "Family" not in result.detail


async def test_servers_with_every_permission_are_ok(discord_api):
    """Every permission (or Administrator) in each server is ok and lists the servers."""
    discord_api.add_guild("Family", EVERYTHING)
    discord_api.add_guild("Admin one", discord.Permissions(administrator=True))
    result = await (await logged_in(discord_api)).discord_servers()
    assert result.ok, result.detail
    assert result.detail == "in 2 servers (“Family”, “Admin one”) with every permission it needs"


async def test_dev_guild_the_bot_is_not_in_is_a_problem(discord_api):
    """DEV_GUILD_ID naming a server the bot is not in says so, with the invite."""
    discord_api.add_guild("Family", EVERYTHING, guild_id=111)
    result = await (await logged_in(discord_api, dev_guild_id=222)).discord_servers()
    assert result.status is Status.PROBLEM and "DEV_GUILD_ID=222" in result.detail


def test_readme_invite_has_the_doctors_permissions():
    """The README's invite link asks for exactly the permissions the doctor checks."""
    readme = (ROOT / "README.md").read_text()
    assert f"permissions={INVITE_PERMISSIONS.value}" in readme
    assert not INVITE_PERMISSIONS.administrator


async def test_database_ok_and_unusable_paths(tmp_path):
    """A fresh file is created and migrated; a path under a file or a non-database file is a plain problem."""
    assert (await Doctor(doctor_settings(database_path=tmp_path / "db" / "t.sqlite3")).database()).ok
    (tmp_path / "a-file").write_text("x")
    under_file = await Doctor(doctor_settings(database_path=tmp_path / "a-file" / "t.sqlite3")).database()
    assert under_file.status is Status.PROBLEM and "cannot create the folder" in under_file.detail
    (tmp_path / "notes.sqlite3").write_bytes(b"these are not the droids" * 100)
    not_db = await Doctor(doctor_settings(database_path=tmp_path / "notes.sqlite3")).database()
    assert not_db.status is Status.PROBLEM and "is not a database file" in not_db.detail
    for result in (under_file, not_db):
        assert "Error" not in result.detail and "errno" not in result.detail.lower()


async def test_gemini_unreachable_is_not_a_rejected_key():
    """Nothing listening where Gemini should be: could not reach Gemini, the key not tried."""
    doctor = Doctor(doctor_settings(gemini_api_key="k", gemini_base_url=f"https://127.0.0.1:{closed_port()}"))
    result = await doctor.gemini_live()
    assert result.detail == ("could not reach Gemini (127.0.0.1): check that this machine is online; "
                             "the API key was not checked yet")


async def test_gemini_round_trip_ok_and_key_rejected(monkeypatch):
    """Against the fake Live server: a real round trip is ok; a wrong key says GEMINI_API_KEY was rejected."""
    async with FakeLiveServer(reply_audio_ms=300) as server:
        good = await Doctor(make_client_settings(server, monkeypatch), live_timeout=10).gemini_live()
        bad = await Doctor(make_client_settings(server, monkeypatch, gemini_api_key="wrong-key-123"),
                           live_timeout=10).gemini_live()
    assert good.ok, good.detail
    assert good.detail.startswith("gemini-3.8-live accepted the bot's setup (session session-1) and answered: "
                                  "first audio after"), good.detail
    assert bad.status is Status.PROBLEM and "Gemini rejected the API key" in bad.detail
    assert "wrong-key-123" not in bad.detail


async def test_run_prints_one_line_per_check_and_exits_on_problems(capsys):
    """One line per check plus a last line; 0 only without problems; a check that raises is one problem."""
    async def good() -> CheckResult:
        return ok("good", "fine")

    async def bad() -> CheckResult:
        return problem("bad", "broken: fix it")

    async def broken() -> CheckResult:
        raise RuntimeError("boom")

    doctor = Doctor(doctor_settings())
    assert await doctor.run([good]) == 0
    assert capsys.readouterr().out == "ok       good: fine\nall checks passed\n"
    assert await doctor.run([good, bad, broken]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "problem  bad: broken: fix it"
    assert lines[2].startswith("problem  broken: the check itself failed (RuntimeError)")
    assert lines[3] == "2 problems found: fix the lines marked “problem” above"


def run_doctor_cli(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m bot doctor` in `cwd`, with Discord and Gemini at closed local ports (this machine is offline)."""
    code = ("import sys, bot.doctor as d; "
            f"d.DISCORD_API = 'http://127.0.0.1:{closed_port()}/api/v10'; "
            f"d.GEMINI_URL = 'https://127.0.0.1:{closed_port()}'; "
            "from bot.__main__ import main; sys.exit(main(['doctor']))")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_newcomer_env_example_offline_shows_only_reachability(tmp_path):
    """.env.example copied with the two secrets: every line ok except "could not reach" Discord and Gemini."""
    example = (ROOT / ".env.example").read_text()
    (tmp_path / ".env").write_text(example.replace("DISCORD_TOKEN=\n", "DISCORD_TOKEN=MTIz.fake.token\n")
                                   .replace("GEMINI_API_KEY=\n", "GEMINI_API_KEY=AIzaFakeKey\n"))
    result = run_doctor_cli(tmp_path)
    lines = result.stdout.splitlines()
    assert result.returncode == 1 and result.stderr == "", result.stderr
    problems = [line for line in lines if line.startswith("problem")]
    assert [p.split(":")[0] for p in problems] == ["problem  discord login", "problem  gemini live"]
    assert all("could not reach" in p for p in problems)
    assert sum(line.startswith("ok") for line in lines) == 7 and "skipped  discord servers" in result.stdout
    for word in ("Traceback", "ERROR", "Error", "pydantic", "MTIz.fake.token", "AIzaFakeKey"):
        assert word not in result.stdout


def test_doctor_without_secrets_names_each_once(tmp_path):
    """No .env: each secret is one problem line; nothing that needs them is tried."""
    result = run_doctor_cli(tmp_path)
    assert result.returncode == 1
    assert re.findall(r"^problem  (\w+):", result.stdout, re.M) == ["DISCORD_TOKEN", "GEMINI_API_KEY"]


def test_debug_log_level_shows_logs_on_stderr_only(tmp_path):
    """LOG_LEVEL=DEBUG keeps the report on stdout and adds log lines on stderr."""
    result = run_doctor_cli(tmp_path, {"LOG_LEVEL": "DEBUG", "DATABASE_PATH": str(tmp_path / "d.sqlite3")})
    assert "storage.opened" in result.stderr and "storage.opened" not in result.stdout

"""SIGTERM (systemd's stop, `docker stop`, the `--processes` supervisor) runs the same graceful close as Ctrl-C.

A real `python -m bot run` process (bot.__main__.main) with only Discord's gateway stood in for: `TutorBot.start`
is replaced by a coroutine that does what the gateway would make happen (setup_hook, then two `/tutor start`s)
and waits. Conversations are real (fake voice client, the fake Live server with the real SDK), storage is a real
SQLite file whose turn writes are slowed so turns are still queued when the signal arrives.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from bot import endings
from bot.storage import Database, Repository

REPO_ROOT = Path(__file__).resolve().parents[2]
GUILD_TALKING, GUILD_STARTING = 1001, 1002

CHILD = r"""
import asyncio, os, sys

import bot.__main__ as cli
from bot.client import TutorBot
from bot.config import Settings
from bot.levels import BUILTIN_LEVELS
from bot.storage.queries.turns import TurnQueries
from bot.tutor import Conversations, StartRequest
from tests.fake_live import FakeLiveServer
from tests.helpers import FakeVoiceConnector, MockMember, MockVoiceChannel
from tests.signals import tone

real_add_turn = TurnQueries.add_turn


async def slow_add_turn(self, *args, **kwargs):  # a busy disk: turns wait in the writer's queue
    await asyncio.sleep(1.0)
    return await real_add_turn(self, *args, **kwargs)


async def posted(text, **_):
    print("posted:", text.replace("\n", " "), flush=True)


def channel_of(kid):
    channel = MockVoiceChannel(name="Homework Corner")
    channel.members = [kid]
    channel.send.side_effect = posted
    return channel


async def gateway_stand_in(self, token):
    server = FakeLiveServer(think_time=0.05, reply_audio_ms=400)
    await server.__aenter__()
    os.environ["SSL_CERT_FILE"] = str(server.ca_file)
    live = Settings(_env_file=None, discord_token="t" * 30, gemini_api_key=server.api_key,
                    gemini_base_url=server.url, gemini_api_version="v1beta")
    connector = FakeVoiceConnector()
    talking_kid, starting_kid = MockMember(display_name="Ana"), MockMember(display_name="Ben")
    talking, starting = channel_of(talking_kid), channel_of(starting_kid)

    joining = asyncio.Event()

    async def connect(channel):
        if channel is starting:  # this guild's voice server never answers: its start is still going
            print("joining", flush=True)
            joining.set()
            await asyncio.Event().wait()
        return await connector(channel)

    self.conversations = Conversations(settings=live, repository=self.repository, connect=connect)
    await self.setup_hook()  # the cogs register as observers, as they do when the bot logs in
    request = dict(voice_channel=talking, starter_id=talking_kid.id, starter_name="Ana",
                   level=BUILTIN_LEVELS["space"], age=8, greet=False)  # only the kid's turn and the reply queue
    conversation = await self.conversations.start(StartRequest(guild_id=TALKING, **request))
    await connector.last.say(talking_kid, tone(300, 48_000, 0.6, amplitude=0.3, channels=2))
    while conversation.status().playback_buffered_ms == 0:  # the reply plays: the kid's turn is done, the tutor's not
        await asyncio.sleep(0.02)
    request.update(voice_channel=starting, starter_id=starting_kid.id, starter_name="Ben")
    asyncio.ensure_future(self.conversations.start(StartRequest(guild_id=STARTING, **request)))
    await joining.wait()
    print("ready", conversation.session_id, conversation.status().turns, flush=True)
    await asyncio.Event().wait()


async def no_sync(self):
    pass


TurnQueries.add_turn = slow_add_turn
TutorBot.start = gateway_stand_in
TutorBot.sync_commands = no_sync
TALKING, STARTING = (int(guild) for guild in sys.argv[1:3])
sys.exit(cli.main(["run"]))
"""


async def test_sigterm_says_goodbye_drains_turns_and_closes_every_session(tmp_path: Path) -> None:
    """After SIGTERM the process exits 0 having: posted the goodbye, stored the turns still queued, closed the
    talking guild's session row, and called off the start still joining in the other guild (row closed too)."""
    path = tmp_path / "tutor.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DISCORD_TOKEN": "d" * 40, "GEMINI_API_KEY": "g" * 30,
           "DATABASE_PATH": str(path), "LOG_LEVEL": "INFO"}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(GUILD_TALKING), str(GUILD_STARTING), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env=env)
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not (lines and lines[-1].startswith("ready")):
                line = (await child.stdout.readline()).decode()
                assert line, (await child.stderr.read()).decode()[-3000:]
                lines.append(line.strip())
        _, session_id, stored_before = lines[-1].split()
        assert "joining" in lines and stored_before == "0"  # the signal comes while both turns are queued
        child.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(child.communicate(), 60)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    log = stderr.decode() + stdout.decode()
    assert child.returncode == 0, log[-3000:]
    assert "posted: 👋 The tutor had to go for a little while." in stdout.decode(), log[-3000:]
    assert "SIGTERM" in log

    db = await Database.open(path)
    try:
        repository = Repository(db)
        talking = await repository.get_session(GUILD_TALKING, int(session_id))
        assert talking.end_reason == endings.SHUTTING_DOWN
        roles = [t.role for t in await repository.get_turns(GUILD_TALKING, talking.id)]
        assert "child" in roles and roles[-1] == "tutor"  # every queued turn was written before the exit
        (starting,) = await repository.list_sessions(GUILD_STARTING)
        assert starting.end_reason == endings.SHUTTING_DOWN
    finally:
        await db.close()

"""The one module with Discord mocks, plus a small fake of our own conversation registry.

Every Discord mock is `spec_set` from a real discord.py object (python-discord's `tests/helpers.py` idea), so
a misspelt attribute raises and `isinstance(MockGuild(), discord.Guild)` holds; coroutine methods become
`AsyncMock`s. Unlike pydis, `MockInteraction` is spec'd too, and so are its `response` and `followup`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import discord
import discord.opus
from discord import app_commands

from bot.audio.dave import ReceiveStats
from bot.client import TutorBot
from bot.config import Settings
from bot.errors import AlreadyRunning, NotInCall, NotRunning, TextTooLong
from bot.participants import in_call, may_type
from bot.storage.models import GuildSettings
from bot.storage.repository import Repository
from bot.tutor import SAY_LIMIT, ConversationResult, ConversationStatus, StartRequest

_ids = itertools.count(100_000_000_000_000_000)
_state = MagicMock()
_GUILD = discord.Guild(data={"id": 1, "name": "guild", "owner_id": 1, "afk_timeout": 60}, state=_state)
_USER_DATA = {"id": 2, "username": "kid", "discriminator": "0", "avatar": None}
_MEMBER = discord.Member(data={"user": _USER_DATA, "roles": [], "flags": 0}, guild=_GUILD, state=_state)
_ROLE = discord.Role(guild=_GUILD, state=_state, data={"id": 3, "name": "role"})
_VOICE = discord.VoiceChannel(state=_state, guild=_GUILD, data={
    "id": 4, "type": 2, "name": "Voice", "position": 1, "bitrate": 64000, "user_limit": 0, "parent_id": None})
_TEXT = discord.TextChannel(state=_state, guild=_GUILD, data={
    "id": 5, "type": 0, "name": "text", "position": 1, "parent_id": None})

VOICE_PERMISSIONS = discord.Permissions(view_channel=True, connect=True, speak=True, use_voice_activation=True,
                                        send_messages=True, embed_links=True)


def next_id() -> int:
    """A fresh snowflake-sized id."""
    return next(_ids)


def make_settings(**overrides: Any) -> Settings:
    """Settings with dummy secrets, ignoring any .env on the machine."""
    return Settings(_env_file=None, discord_token="test-token", gemini_api_key="test-key", **overrides)


class _DiscordMock(MagicMock):
    """A `spec_set` MagicMock whose children are plain mocks, or `AsyncMock`s for coroutine methods."""

    spec_set: Any = None

    def __init__(self, **kwargs: Any) -> None:
        name = kwargs.pop("name", None)
        super().__init__(spec_set=self.spec_set, **kwargs)
        if name is not None:
            self.name = name

    def _get_child_mock(self, **kwargs: Any) -> MagicMock:
        spec_class = self.__dict__.get("_spec_class")
        if inspect.iscoroutinefunction(getattr(spec_class, kwargs.get("_new_name", ""), None)):
            return AsyncMock(**kwargs)
        return MagicMock(**kwargs)


class MockRole(_DiscordMock):
    """A plain role (position 1, not managed); `default=True` makes it the guild's @everyone (id = guild id)."""

    spec_set = _ROLE

    def __init__(self, *, default: bool = False, **kwargs: Any) -> None:
        role_id = kwargs.pop("id", None) or (kwargs["guild"].id if default else next_id())
        defaults = {"name": "@everyone" if default else "role", "position": 0 if default else 1,
                    "mention": "@everyone" if default else f"<@&{role_id}>", "managed": False}
        super().__init__(**{**defaults, **kwargs}, id=role_id)
        self.is_default.return_value = default


class MockGuild(_DiscordMock):
    """A guild whose `get_role` finds roles in `roles`, and whose `me` is the bot's member."""

    spec_set = _GUILD

    def __init__(self, *, roles: list[MockRole] | None = None, **kwargs: Any) -> None:
        super().__init__(**{"id": next_id(), "name": "Test Server", **kwargs})
        self.roles = list(roles or [])
        self.get_role.side_effect = lambda role_id: next((r for r in self.roles if r.id == role_id), None)
        self.default_role = MockRole(guild=self, default=True)
        self.me = MockMember(guild=self, name="Tutor", display_name="Tutor", bot=True)
        self.me.top_role = MockRole(guild=self, name="Tutor", position=10, managed=True)


class MockVoiceState(_DiscordMock):
    spec_set = discord.VoiceState


class MockVoiceChannel(_DiscordMock):
    """A voice channel where the bot has every permission it needs unless `bot_permissions` says otherwise."""

    spec_set = _VOICE

    def __init__(self, *, bot_permissions: discord.Permissions = VOICE_PERMISSIONS, **kwargs: Any) -> None:
        channel_id = kwargs.pop("id", None) or next_id()
        defaults = {"name": "Homework Corner", "mention": f"<#{channel_id}>", "type": discord.ChannelType.voice}
        super().__init__(**{**defaults, **kwargs}, id=channel_id)
        if "guild" not in kwargs:
            self.guild = MockGuild()
        self.members = []
        self.permissions_for.return_value = bot_permissions


class MockTextChannel(_DiscordMock):
    """A text channel that keeps what is sent as Discord does: `send` returns a message with a fresh id, kept in
    `posted` until `get_partial_message(id).delete()` removes it; deleting one that is gone is a 404 (NotFound).
    `delete_error` (an HTTPException) makes every delete fail, as a Discord outage would."""

    spec_set = _TEXT

    def __init__(self, **kwargs: Any) -> None:
        channel_id = kwargs.pop("id", None) or next_id()
        super().__init__(**{"name": "general", "mention": f"<#{channel_id}>", **kwargs}, id=channel_id)
        self.__dict__["posted"] = {}  # dict[message id, what was sent]; not a TextChannel attribute, so set here
        self.__dict__["delete_error"] = None
        self.send.side_effect = self._send
        self.get_partial_message.side_effect = self._partial

    async def _send(self, content: str | None = None, **kwargs: Any) -> SimpleNamespace:
        message_id = next_id()
        self.posted[message_id] = {"content": content, **kwargs}
        return SimpleNamespace(id=message_id, channel=self)

    def _partial(self, message_id: int) -> SimpleNamespace:
        async def delete(*, delay: float | None = None) -> None:
            if self.delete_error is not None:
                raise self.delete_error
            if self.posted.pop(message_id, None) is None:
                raise discord.NotFound(MagicMock(status=404, reason="Not Found"), {"code": 10008,
                                                                                   "message": "Unknown Message"})

        return SimpleNamespace(id=message_id, channel=self, delete=delete)


class MockMember(_DiscordMock):
    """A member with real `Permissions`, a role list, and (optionally) a voice channel they sit in."""

    spec_set = _MEMBER

    def __init__(self, *, guild: MockGuild | None = None, roles: list[MockRole] | None = None,
                 permissions: discord.Permissions | None = None, voice_channel: Any = None, **kwargs: Any) -> None:
        member_id = kwargs.pop("id", None) or next_id()
        defaults = {"name": "kid", "display_name": "Kid", "global_name": None, "bot": False,
                    "mention": f"<@{member_id}>"}
        super().__init__(**{**defaults, **kwargs}, id=member_id)
        self.guild = guild if guild is not None else MockGuild()
        self.roles = list(roles or [])
        self.guild_permissions = permissions if permissions is not None else discord.Permissions.none()
        self.voice = MockVoiceState(channel=voice_channel) if voice_channel is not None else None
        if voice_channel is not None and isinstance(getattr(voice_channel, "members", None), list):
            voice_channel.members.append(self)  # discord.py derives channel.members from the same voice states


class MockInteractionResponse(_DiscordMock):
    """`is_done()` turns true once the mock was answered, deferred or given a modal, as the real one does."""

    spec_set = discord.InteractionResponse

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        answers = (self.send_message, self.defer, self.edit_message, self.send_modal)
        self.is_done.side_effect = lambda: any(answer.called for answer in answers)


class MockWebhook(_DiscordMock):
    spec_set = discord.Webhook


class MockRepository(_DiscordMock):
    """The repository with default guild settings; set `get_settings.return_value` to change them."""

    spec_set = Repository

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.get_settings.side_effect = lambda guild_id: GuildSettings(guild_id=guild_id)
        self.list_custom_levels.return_value = []
        self.member_names.return_value = {}


def make_bot(**settings: Any) -> TutorBot:
    """A real, never-connected `TutorBot` (real `TutorTree`) over a fake conversation registry."""
    return TutorBot(settings=make_settings(**settings), db=MagicMock(), conversations=lambda bot: FakeConversations())


class MockBot(_DiscordMock):
    """A `TutorBot` look-alike with a spec'd repository and a `FakeConversations` registry."""

    spec_set = None  # filled lazily: building a TutorBot needs the whole import chain

    def __init__(self, **kwargs: Any) -> None:
        if MockBot.spec_set is None:
            MockBot.spec_set = make_bot()
        super().__init__(**kwargs)
        self.repository = MockRepository()
        self.conversations = FakeConversations()
        self.settings = make_settings()


class MockInteraction(_DiscordMock):
    """An interaction from `user` (a member of `guild`), or a DM when `guild=None` is passed explicitly."""

    spec_set = discord.Interaction

    def __init__(self, *, user: Any = None, client: Any = None, **kwargs: Any) -> None:
        user = user if user is not None else MockMember()
        guild = kwargs.pop("guild", user.guild if isinstance(user, discord.Member) else None)
        super().__init__(**{"id": next_id(), "locale": discord.Locale.british_english, **kwargs})
        self.user = user
        self.guild = guild
        self.guild_id = guild.id if guild is not None else None
        self.client = client if client is not None else MockBot()
        self.response = MockInteractionResponse()
        self.followup = MockWebhook()
        self.command = None


# ----- running commands the way discord.py would ----------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the user saw in answer to an interaction."""

    content: str | None
    embed: discord.Embed | None  # the first embed, when several were sent
    ephemeral: bool
    embeds: tuple[discord.Embed, ...] = ()


def reply_of(interaction: MockInteraction) -> Reply:
    """The last answer sent, through `followup` if the interaction was deferred, else through `response`."""
    sender = interaction.followup.send if interaction.followup.send.called else interaction.response.send_message
    assert sender.called, "the interaction was never answered"
    args, kwargs = sender.call_args
    content = args[0] if args else kwargs.get("content")
    embeds = tuple(kwargs.get("embeds") or ([kwargs["embed"]] if kwargs.get("embed") else []))
    return Reply(content, embeds[0] if embeds else None, bool(kwargs.get("ephemeral", False)), embeds)


async def run_checks(command: app_commands.Command, interaction: MockInteraction) -> None:
    """Run a command's checks in order; a check returning False fails as discord.py's would."""
    for check in command.checks:
        if not await discord.utils.maybe_coroutine(check, interaction):
            raise app_commands.CheckFailure(f"The check functions for command {command.name!r} failed.")


async def call_command(command: app_commands.Command, cog: Any, interaction: MockInteraction, **kwargs: Any) -> None:
    """Checks, then the callback; errors propagate unchanged."""
    interaction.command = command
    await run_checks(command, interaction)
    await command.callback(cog, interaction, **kwargs)


async def handle_error(tree: app_commands.CommandTree, interaction: MockInteraction, error: Exception,
                       command: app_commands.Command | None = None) -> Reply:
    """Route an exception through the tree's on_error as discord.py does (non-AppCommandErrors wrapped)."""
    if command is not None:
        interaction.command = command
    if not isinstance(error, app_commands.AppCommandError):
        error = app_commands.CommandInvokeError(command or _PLACEHOLDER_COMMAND, error)
    await tree.on_error(interaction, error)
    return reply_of(interaction)


async def invoke(tree: app_commands.CommandTree, command: app_commands.Command, cog: Any,
                 interaction: MockInteraction, **kwargs: Any) -> Reply:
    """Run a command end to end (checks, callback, the tree's error handler) and return what the user saw."""
    try:
        await call_command(command, cog, interaction, **kwargs)
    except Exception as error:  # exactly what discord.py hands to on_error
        return await handle_error(tree, interaction, error, command)
    return reply_of(interaction)


async def _placeholder(interaction: discord.Interaction) -> None:
    """A command to name in CommandInvokeError when a test has none."""


_PLACEHOLDER_COMMAND = app_commands.Command(name="placeholder", description="-", callback=_placeholder)


# ----- a fake of our own core: the conversation registry --------------------------------------------


_STATUS = ConversationStatus(
    guild_id=1, session_id=7, channel_id=4, channel_name="Homework Corner", level_title="Space and the planets",
    age=8, starter_name="Kid", started_at=datetime(2026, 11, 25, 16, 0, tzinfo=UTC), uptime_s=754.0,
    speakers=["Kid", "Sam"], turns=12, flagged_turns=1, reconnects=2, live_connected=True,
    packets_received=15_000, packets_dropped=3, packets_concealed=5, playback_buffered_ms=120.0, underruns=1,
    input_latency_ms=24.5, reply_latency_ms=640.0, minutes_used_today=18.5, daily_minutes=60,
    session_cost_usd=0.42, session_tokens=52_100, spent_today_usd=1.10, daily_budget_usd=5.0)


def make_status(**overrides: Any) -> ConversationStatus:
    """A plausible status snapshot; override any field."""
    return dataclasses.replace(_STATUS, **overrides)


@dataclass
class FakeConversation:
    """What `Conversations.start` returns, with the fields the cogs read."""

    request: StartRequest
    session_id: int
    status_snapshot: ConversationStatus = field(default_factory=make_status)

    @property
    def guild_id(self) -> int:
        return self.request.guild_id

    @property
    def voice_channel(self) -> Any:
        return self.request.voice_channel

    @property
    def level(self) -> Any:
        return self.request.level

    @property
    def age(self) -> int:
        return self.request.age

    def status(self) -> ConversationStatus:
        return self.status_snapshot

    def involves(self, member_id: int) -> bool:
        return member_id == self.request.starter_id or in_call(member_id, self.voice_channel)


class FakeConversations:
    """Records every call; one conversation per guild like the real one; `fail[method] = error` makes it raise."""

    def __init__(self) -> None:
        self.running: dict[int, FakeConversation] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail: dict[str, Exception] = {}
        self.observers: list[Any] = []
        self.duration_s = 125.0
        self.turns = 9

    def called(self, method: str) -> list[tuple[Any, ...]]:
        """The argument tuples of every call to `method`."""
        return [args for name, args in self.calls if name == method]

    def _enter(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        if method in self.fail:
            raise self.fail[method]

    def get(self, guild_id: int) -> FakeConversation | None:
        return self.running.get(guild_id)

    def involves(self, guild_id: int, member_id: int) -> bool:
        conversation = self.running.get(guild_id)
        return conversation is not None and conversation.involves(member_id)

    def add_observer(self, observer: Any) -> None:
        self.observers.append(observer)

    def remove_observer(self, observer: Any) -> None:
        if observer in self.observers:
            self.observers.remove(observer)

    async def start(self, request: StartRequest) -> FakeConversation:
        self._enter("start", request)
        if (running := self.running.get(request.guild_id)) is not None:
            raise AlreadyRunning(running.voice_channel.mention)
        conversation = FakeConversation(request, session_id=len(self.calls))
        self.running[request.guild_id] = conversation
        return conversation

    async def stop(self, guild_id: int, reason: str = "stopped with /tutor stop") -> ConversationResult:
        self._enter("stop", guild_id, reason)
        conversation = self.running.pop(guild_id, None)
        if conversation is None:
            raise NotRunning
        return ConversationResult(guild_id, conversation.session_id, conversation.voice_channel.id,
                                  self.duration_s, self.turns, reason)

    def rename(self, guild_id: int, member_id: int, chosen: str | None) -> None:
        self._enter("rename", guild_id, member_id, chosen)

    async def say(self, guild_id: int, author_id: int, author_name: str, text: str) -> None:
        self._enter("say", guild_id, author_id, author_name, text)
        if guild_id not in self.running:
            raise NotRunning
        channel = self.running[guild_id].voice_channel
        if not may_type(author_id, channel=channel):  # the real rule, not a copy
            raise NotInCall(channel.mention)
        if len(text) > SAY_LIMIT:
            raise TextTooLong(SAY_LIMIT)

    async def stop_all(self, reason: str) -> None:
        self._enter("stop_all", reason)
        self.running.clear()


class FakeVoiceClient:
    """Stands in for `DaveVoiceRecvClient` once connected: the gateway/UDP side is what we fake.

    The sink, playback source and everything behind them are the real ones, and so is the player: `play()`
    starts discord.py's own `AudioPlayer` thread, which reads a frame every 20 ms, hands it to
    `send_audio_packet` (recorded in `sent`), stops for good on b"", and calls `source.cleanup()` when it
    ends — on `stop()`, on `disconnect()`, or after `timeout` seconds without a connection. `speak()` pushes
    decoded 48 kHz stereo frames into the sink from a reader-like thread at real-time pace.

    `real_player=False` (an explicit switch) leaves the source unread so a test can inspect its buffer and pull
    frames itself with `read_playback()`; `stop()` still calls `source.cleanup()` as the player's end would.
    """

    def __init__(self, channel: Any, *, real_player: bool = True, loop: asyncio.AbstractEventLoop | None = None,
                 timeout: float = 20.0) -> None:
        self.channel = channel
        self.sink: Any = None
        self.source: Any = None
        self._connected = threading.Event()
        self._connected.set()
        self.listen_calls = 0
        self.reader_alive = False
        self.receive_stats = ReceiveStats()
        self.gateway_alive = True
        self.real_player = real_player
        self.timeout = timeout  # discord.py: how long a player waits for a lost connection to come back
        self.sent: collections.deque[bytes] = collections.deque(maxlen=3000)  # what the player sent, oldest first
        self.client = SimpleNamespace(loop=loop or asyncio.get_running_loop())  # the player schedules ws.speak here
        self.ws = SimpleNamespace(speak=self._speak)
        self.speaking: list[int] = []  # every SPEAKING state the player announced, in order
        self._player: discord.player.AudioPlayer | None = None
        self._held_paused = False
        self._decoder: Any = None  # a kid's client: decodes the Opus packets the player sends

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @connected.setter
    def connected(self, value: bool) -> None:
        (self._connected.set if value else self._connected.clear)()

    async def _speak(self, state: Any) -> None:
        """The voice websocket's SPEAKING opcode: recorded, nothing to send offline."""
        self.speaking.append(int(state))

    @property
    def playback(self) -> Any:
        """The conversation's PlaybackSource behind what is playing (VoiceLink plays tap → Opus encoder)."""
        source = getattr(self.source, "pcm", self.source)
        return getattr(source, "playback", source)

    # the part of the voice client the conversation uses
    def listen(self, sink: Any, *, after: Any = None) -> None:
        self.sink, self.reader_alive = sink, True
        self.listen_calls += 1

    def listener_alive(self) -> bool:
        return self.reader_alive

    def voice_gateway_alive(self) -> bool:
        return self.gateway_alive

    def stop_listening(self) -> None:
        self.reader_alive = False

    def play(self, source: Any) -> None:
        """`VoiceClient.play`: refused when not connected or already playing, then a real player thread."""
        if not self.is_connected():
            raise discord.ClientException("Not connected to voice.")
        if self.is_playing():
            raise discord.ClientException("Already playing audio.")
        if not isinstance(source, discord.AudioSource):
            raise TypeError(f"source must be an AudioSource not {source.__class__.__name__}")
        self.source = source
        if self.real_player:
            self._player = discord.player.AudioPlayer(source, self)
            self._player.start()

    def is_playing(self) -> bool:
        if self.real_player:
            return self._player is not None and self._player.is_playing()
        return self.source is not None

    def pause(self) -> None:
        """`VoiceClient.pause`: the real player sends five Opus silence frames, SPEAKING off, then rests."""
        if self._player is not None:
            self._player.pause()
        self._held_paused = True

    def resume(self) -> None:
        if self._player is not None:
            self._player.resume()
        self._held_paused = False

    def is_paused(self) -> bool:
        if self.real_player:
            return self._player is not None and self._player.is_paused()
        return self._held_paused

    def stop(self) -> None:
        """`VoiceClient.stop`: the player thread ends and calls `source.cleanup()` (held mode: right here)."""
        if self._player is not None:
            self._player.stop()
            self._player = None
        elif self.source is not None and not self.real_player:
            self.source.cleanup()
        self.source = None

    def is_connected(self) -> bool:
        return self.connected

    def wait_until_connected(self, timeout: float | None = 30.0) -> bool:
        self._connected.wait(timeout)
        return self.connected

    def send_audio_packet(self, data: bytes, *, encode: bool = True) -> None:
        """What the player sends, recorded as PCM: Opus packets are decoded as a kid's client would."""
        if not encode:
            self._decoder = self._decoder or discord.opus.Decoder()
            data = self._decoder.decode(data, fec=False)
        self.sent.append(bytes(data))

    async def disconnect(self, *, force: bool = False) -> None:
        """`VoiceClient.disconnect`: stop the player, drop the connection, unregister."""
        self.stop()
        self.connected = False
        self.cleanup()

    def cleanup(self) -> None:
        self.connected = False

    # test drivers
    def speak(self, member: Any, pcm48k_stereo: bytes, *, frame_bytes: int = 3840,
              pace: float = 0.02) -> threading.Thread:
        """Deliver `pcm48k_stereo` to the sink in 20 ms frames from another thread, like voice-recv's router."""
        def run() -> None:
            for i in range(0, len(pcm48k_stereo), frame_bytes):
                if self.sink is not None and self.reader_alive:
                    self.sink.write(member, SimpleNamespace(pcm=pcm48k_stereo[i:i + frame_bytes]))
                    self.receive_stats.count("packets_received")
                time.sleep(pace)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    async def say(self, member: Any, pcm48k_stereo: bytes, **pacing: Any) -> None:
        """`speak` and wait until the kid has finished, off the event loop (see `finished`)."""
        await finished(self.speak(member, pcm48k_stereo, **pacing))

    def audible(self) -> list[bytes]:
        """The frames the real player sent that were not silence (the tutor's voice as Discord got it)."""
        return [frame for frame in list(self.sent) if frame.count(0) != len(frame)]

    def read_playback(self, frames: int) -> list[bytes]:
        """Held mode: up to `frames` frames as discord.py's player would send them (unpaced), decoded to PCM.

        Like the real player, nothing is read while paused, so fewer frames may come back.
        """
        assert not self.real_player, "the real player is reading this source; use audible()"
        out = []
        for _ in range(frames):
            if self._held_paused:
                break
            data = self.source.read()
            if not data:
                break
            if self.source.is_opus():
                self._decoder = self._decoder or discord.opus.Decoder()
                data = self._decoder.decode(data, fec=False)
            out.append(data)
        return out


async def finished(*speakers: threading.Thread) -> None:
    """Wait for kids speaking (`FakeVoiceClient.speak` threads) without blocking the event loop.

    `thread.join()` on the loop would stall the pump for the whole utterance: the frames pile up, the mixer's
    cap drops the oldest, and the test runs on the stall path instead of the one a kid takes.
    """
    for speaker in speakers:
        await asyncio.to_thread(speaker.join)


class FakeVoiceConnector:
    """`connect` for `Conversations`: hands out `FakeVoiceClient`s and remembers them; can be told to fail.

    `real_player=False` hands out held-playback clients (see `FakeVoiceClient`).
    """

    def __init__(self, *, real_player: bool = True) -> None:
        self.clients: list[FakeVoiceClient] = []
        self.error: Exception | None = None
        self.hang = False  # the voice server never answers: the join waits until it is cancelled
        self.joins_started = 0
        self.real_player = real_player

    async def __call__(self, channel: Any) -> FakeVoiceClient:
        self.joins_started += 1
        if self.error is not None:
            raise self.error
        if self.hang:
            await asyncio.Event().wait()
        client = FakeVoiceClient(channel, real_player=self.real_player)
        self.clients.append(client)
        return client

    @property
    def last(self) -> FakeVoiceClient:
        return self.clients[-1]


class SilentGateway:
    """Discord's main gateway as seen by a voice join: it records voice-state updates and never answers them
    (the voice server handshake a real gateway would start never comes)."""

    open = False  # discord.Client.close() only closes an open socket

    def __init__(self) -> None:
        self.voice_states: list[tuple[int, int | None]] = []

    async def voice_state(self, guild_id: int, channel_id: int | None, self_mute: bool = False,
                          self_deaf: bool = False) -> None:
        self.voice_states.append((guild_id, channel_id))


async def real_voice_channel() -> tuple[discord.Client, discord.VoiceChannel, SilentGateway]:
    """A real discord.py client state, guild and voice channel whose gateway is a `SilentGateway`.

    For code that must go through discord.py's own `VoiceChannel.connect` bookkeeping (voice clients
    registered per guild); only the gateway socket is fake.
    """
    client = discord.Client(intents=discord.Intents(guilds=True, voice_states=True))
    await client._async_setup_hook()
    state = client._connection
    state.user = discord.ClientUser(state=state, data={"id": str(next_id()), "username": "tutor",
                                                       "discriminator": "0", "avatar": None, "bot": True})
    guild_id = next_id()
    guild = discord.Guild(data={"id": str(guild_id), "name": "Family", "channels": [], "roles": [], "members": [],
                                "voice_states": []}, state=state)
    state._add_guild(guild)
    channel = discord.VoiceChannel(state=state, guild=guild, data={
        "id": str(next_id()), "name": "Homework Corner", "type": 2, "position": 0, "guild_id": str(guild_id),
        "permission_overwrites": [], "bitrate": 64000, "user_limit": 0})
    guild._add_channel(channel)
    gateway = SilentGateway()
    client.ws = gateway  # type: ignore[assignment]  # what guild.change_voice_state sends through
    return client, channel, gateway


@dataclass
class FakeDiscordAPI:
    """Discord's REST API on 127.0.0.1 for the two calls `doctor` makes, answering as Discord does.

    `GET /api/v10/users/@me` and `/users/@me/guilds` need `Authorization: Bot <token>` exactly (a bare
    token is a 401 too, as on Discord) and a User-Agent; a 401 body is `{"message": "401: Unauthorized",
    "code": 0}`. `mode="rate_limited"` answers 429 with `retry_after`; `mode="outage"` answers 502 with
    an HTML page (Cloudflare's, not JSON); `mode="stall"` never answers. `guilds` are partial guild
    objects with the bot's server-wide `permissions` as a string, as Discord sends them.
    """

    token: str = "test-token"
    bot_id: str = "1234567890123456789"
    bot_name: str = "Tutor"
    guilds: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "ok"
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, User-Agent)
    base_url: str = ""
    _runner: Any = None

    def add_guild(self, name: str, permissions: discord.Permissions, guild_id: int | None = None) -> int:
        """The bot is in this server with these server-wide permissions; returns its id."""
        guild_id = guild_id or next_id()
        self.guilds.append({"id": str(guild_id), "name": name, "icon": None, "owner": False,
                            "permissions": str(permissions.value), "features": []})
        return guild_id

    async def __aenter__(self) -> FakeDiscordAPI:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/api/v10/users/@me", self._me)
        app.router.add_get("/api/v10/users/@me/guilds", self._guilds)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # aiohttp exposes the bound port only here
        self.base_url = f"http://127.0.0.1:{port}/api/v10"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()

    async def _answer(self, request: Any, body: Any) -> Any:
        import asyncio

        from aiohttp import web

        self.requests.append((request.path, request.headers.get("User-Agent")))
        if self.mode == "stall":
            await asyncio.sleep(3600)
        if self.mode == "outage":
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>",
                                content_type="text/html")
        if self.mode == "rate_limited":
            return web.json_response({"message": "You are being rate limited.", "retry_after": 2.5, "global": False},
                                     status=429, headers={"Retry-After": "3", "X-RateLimit-Scope": "user"})
        if request.headers.get("Authorization") != f"Bot {self.token}" or not request.headers.get("User-Agent"):
            return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        return web.json_response(body)

    async def _me(self, request: Any) -> Any:
        return await self._answer(request, {"id": self.bot_id, "username": self.bot_name, "discriminator": "0",
                                            "global_name": None, "avatar": None, "bot": True, "flags": 0})

    async def _guilds(self, request: Any) -> Any:
        return await self._answer(request, self.guilds)


class FakeMainGateway:
    """The voice part of Discord's main gateway, set as `client.ws`: discord.py sends op 4 VOICE_STATE_UPDATE
    through `voice_state()` (joining, leaving, resuming); `answer(guild_id, channel_id, self_mute, self_deaf)`
    plays Discord's replies a moment later, as a separate task (the real ones arrive as gateway events)."""

    def __init__(self, answer: Any) -> None:
        self.calls: list[tuple[int, int | None]] = []
        self._answer = answer
        self._tasks: set[Any] = set()

    async def voice_state(self, guild_id: int, channel_id: int | None, self_mute: bool = False,
                          self_deaf: bool = False) -> None:
        import asyncio

        self.calls.append((guild_id, channel_id))
        task = asyncio.get_running_loop().create_task(self._answer(guild_id, channel_id, self_mute, self_deaf))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

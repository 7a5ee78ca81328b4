"""Gemini Live closing with 1011 in every phase of a real conversation: setup, mid-input, mid-reply.

Real sink → mixer → LiveSession (real google-genai SDK) → fake Live server → playback, real SQLite.
`RecordingLiveSession` only remembers the bytes the conversation handed to `send_audio`, so a test can
compare them with what the fake "model" heard after every resumption (`FakeSession.audio`).
"""

from __future__ import annotations

import asyncio
import functools

import pytest

from bot.audio.formats import LIVE_INPUT
from bot.endings import CANT_TALK
from bot.errors import TutorUnavailable
from bot.levels import BUILTIN_LEVELS
from bot.live.outbound import UNCONFIRMED_MARGIN_S
from bot.live.session import LiveConnectFailed, LiveConnectOptions, LiveSession
from bot.storage import Database, Repository
from bot.tutor import Conversations, StartRequest
from tests.fake_live import FakeLiveServer, make_client_settings, replayed_overlap
from tests.helpers import FakeVoiceConnector, MockMember, MockVoiceChannel, finished
from tests.signals import tone

GUILD = 5150
RETRIES = LiveConnectOptions(max_retries=3, first_retry_delay=0.2, max_retry_delay=0.4)
INTERNAL_ERROR = (1011, "Internal error encountered.")


class RecordingLiveSession(LiveSession):
    """The real LiveSession; also keeps every input byte the conversation gave it, in order."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.audio_handed = bytearray()

    def send_audio(self, pcm16k: bytes, *, urgent: bool = False) -> None:
        self.audio_handed += pcm16k
        super().send_audio(pcm16k, urgent=urgent)


@pytest.fixture
async def server():
    async with FakeLiveServer(think_time=0.05, reply_audio_ms=400) as live_server:
        yield live_server


@pytest.fixture
async def repository(tmp_path):
    db = await Database.open(tmp_path / "tutor.sqlite3")
    yield Repository(db)
    await db.close()


@pytest.fixture
def world(server, repository, monkeypatch):
    """Conversations wired to the fake Live server, fake voice and a real database; two kids in the channel.

    Playback is held (nobody reads it unless a test does), so a test can check the buffer survives a cut.
    """
    settings = make_client_settings(server, monkeypatch)
    connector = FakeVoiceConnector(real_player=False)
    conversations = Conversations(settings=settings, repository=repository, connect=connector,
                                  live_factory=functools.partial(RecordingLiveSession, connect_options=RETRIES))
    kids = [MockMember(display_name="Ana"), MockMember(display_name="Ben")]
    channel = MockVoiceChannel(name="Homework Corner")
    channel.members = [*kids, MockMember(display_name="TutorBot", bot=True)]
    return conversations, connector, channel, kids


def start_request(channel) -> StartRequest:
    return StartRequest(guild_id=GUILD, voice_channel=channel, starter_id=1, starter_name="Ana",
                        level=BUILTIN_LEVELS["space"], age=8, greet=False)  # exact turns are counted


def speech(seconds: float) -> bytes:
    return tone(300.0, 48_000, seconds, amplitude=0.3, channels=2)


async def wait_until(predicate, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.01)


async def one_spoken_turn(conversation, voice, kid, server, seconds: float = 0.6) -> None:
    """A kid speaks, the tutor's reply completes and both turns are stored."""
    turns, replies = conversation.status().turns, server.replies_sent
    await voice.say(kid, speech(seconds))
    await server.wait_for(lambda: server.replies_sent > replies)
    await wait_until(lambda: conversation.status().turns >= turns + 2)


async def test_setup_closed_with_1011_once_then_start_succeeds(world, server, repository):
    """The first connection is closed during setup; start retries, succeeds, and the conversation works."""
    conversations, connector, channel, kids = world
    server.setup_failure = INTERNAL_ERROR

    async def heal_after_first_refusal() -> None:
        await server.wait_for(lambda: server.connections and server.connections[0].closed)
        server.setup_failure = None

    healer = asyncio.create_task(heal_after_first_refusal())
    conversation = await conversations.start(start_request(channel))
    await healer
    assert len(server.connections) == 2 and server.connections[0].session is None
    await one_spoken_turn(conversation, connector.last, kids[0], server)
    await conversations.stop(GUILD)
    turns = await repository.get_turns(GUILD, conversation.session_id)
    assert [(t.role, t.text) for t in turns] == [("child", server.child_text), ("tutor", server.reply_text)]


async def test_setup_always_closed_with_1011_fails_with_a_clear_reason(world, server, repository):
    """When every setup is refused, start gives up after its retries and says why; nothing is left open."""
    conversations, connector, channel, _ = world
    server.setup_failure = INTERNAL_ERROR
    with pytest.raises(TutorUnavailable) as caught:
        await conversations.start(start_request(channel))
    assert str(caught.value) == CANT_TALK  # the kid's sentence; the reason is for the moderators
    assert "Could not connect to Gemini after 4 tries" in caught.value.detail and "1011" in caught.value.detail
    assert isinstance(caught.value.__cause__, LiveConnectFailed)
    assert len(server.connections) == RETRIES.max_retries + 1
    assert connector.clients == [] and conversations.get(GUILD) is None
    assert (await repository.list_sessions(GUILD))[0].end_reason.startswith("failed to start: Could not connect")


@pytest.mark.parametrize("handle_first", [True, False], ids=["resumed", "before-first-handle"])
async def test_close_while_a_kid_is_speaking_loses_no_input(world, server, repository, handle_first):
    """Live closes mid-speech: the conversation reconnects, the model hears every byte exactly once, turns stored."""
    conversations, connector, channel, kids = world
    conversation = await conversations.start(start_request(channel))
    voice, live = connector.last, conversation.live
    if handle_first:
        await one_spoken_turn(conversation, voice, kids[0], server)
    else:
        server.resumption_updates = False  # nothing to resume with: the new connection is re-seeded
    connection = server.current
    before = len(connection.audio)

    speaking = voice.speak(kids[1], speech(1.5))
    await server.wait_for(lambda: len(connection.audio) - before >= 16_000)  # ~0.5 s of the 1.5 s arrived
    await server.close(*INTERNAL_ERROR)
    await finished(speaking)
    await server.wait_for(lambda: server.replies_sent >= (2 if handle_first else 1))
    await wait_until(lambda: conversation.status().turns >= (4 if handle_first else 2))

    assert conversation.status().reconnects == 1
    after_close = server.connections[-1]
    assert (after_close.handle_used is not None) == handle_first
    heard = server.sessions[-1].audio
    assert len(live.audio_handed) >= 16_000 * 2 * 1.4  # the whole spurt was mixed and handed over
    # No gap across the reconnect; without a consumed index (the real service) what went out in the last
    # UNCONFIRMED_MARGIN_S before the newest handle may be heard twice.
    duplicated = replayed_overlap(bytes(heard), bytes(live.audio_handed))
    assert duplicated is not None and duplicated <= LIVE_INPUT.bytes_for_ms(UNCONFIRMED_MARGIN_S * 1000)
    await conversations.stop(GUILD)
    turns = await repository.get_turns(GUILD, conversation.session_id)
    assert [t.role for t in turns] == ["child", "tutor"] * (2 if handle_first else 1)
    assert turns[-2].speaker_name == "Ben" and turns[-1].text == server.reply_text


async def close_while_reply_streams(conversation, voice, kid, server) -> None:
    """After one whole turn, a kid asks again and Live closes with 1011 while the long reply is arriving."""
    await one_spoken_turn(conversation, voice, kid, server)
    server.reply_audio_ms, server.chunk_ms = 8000, 40  # ~200 chunks: a long window to close in
    playing_before = voice.playback.frames_read
    received_before = conversation.live.stats.audio_ms_received
    await voice.say(kid, speech(0.6))
    # the second reply is streaming (the first one's audio is still buffered: nobody reads playback here)
    await wait_until(lambda: conversation.live.stats.audio_ms_received > received_before + 200)
    stored_before_cut = conversation.status().turns  # the first exchange (the question waits for its reply)
    replies_before_cut = server.replies_sent
    await server.close(*INTERNAL_ERROR)
    server.reply_audio_ms, server.chunk_ms = 400, 100
    await wait_until(lambda: conversation.status().reconnects == 1 and conversation.status().live_connected)
    await wait_until(lambda: conversation.status().turns > stored_before_cut)  # the cut reply is stored
    assert voice.playback.frames_read == playing_before  # nothing consumed it yet: the buffer is intact
    assert {len(frame) for frame in voice.read_playback(10)} == {3840}  # what arrived still plays
    # The question was sent after the newest handle, so it is replayed and answered again, in full.
    await server.wait_for(lambda: server.replies_sent > replies_before_cut)
    await wait_until(lambda: conversation.status().turns >= stored_before_cut + 3)


async def test_close_while_the_reply_streams_recovers_and_a_later_turn_works(world, server, repository):
    """Live closes mid-reply: it resumes, earlier turns stay intact, and the next spoken turn is answered and stored."""
    conversations, connector, channel, kids = world
    conversation = await conversations.start(start_request(channel))
    voice = connector.last
    await close_while_reply_streams(conversation, voice, kids[0], server)
    assert server.connections[-1].handle_used is not None  # resumed, not re-seeded

    replies = server.replies_sent
    await one_spoken_turn(conversation, voice, kids[1], server)
    assert server.replies_sent > replies and conversation.status().reconnects == 1
    stored_while_running = conversation.status().turns
    turns = await repository.get_turns(GUILD, conversation.session_id)
    assert len(turns) == stored_while_running
    assert [(t.role, t.text) for t in turns[:2]] == [("child", server.child_text), ("tutor", server.reply_text)]
    assert turns[-1].role == "tutor" and turns[-1].text.endswith(server.reply_text)
    assert [t.id for t in turns] == sorted(t.id for t in turns)
    await conversations.stop(GUILD)


async def test_a_reply_cut_by_a_close_is_stored_as_its_own_interrupted_turn(world, server, repository):
    """The cut reply is one interrupted tutor turn; the reply that follows the reconnect is a separate turn."""
    conversations, connector, channel, kids = world
    conversation = await conversations.start(start_request(channel))
    voice = connector.last
    await close_while_reply_streams(conversation, voice, kids[0], server)
    await one_spoken_turn(conversation, voice, kids[1], server)
    await conversations.stop(GUILD)  # every queued turn is written before stop returns
    turns = await repository.get_turns(GUILD, conversation.session_id)
    tutor_turns = [t for t in turns if t.role == "tutor"]
    assert tutor_turns[1].interrupted and tutor_turns[-1].text == server.reply_text


async def test_a_server_streaming_endless_reply_audio_cannot_fill_memory(world, server, repository, monkeypatch):
    """Reply audio beyond the playback cap is dropped (and logged); the turn is still stored whole."""
    import bot.conversation

    monkeypatch.setattr(bot.conversation, "PLAYBACK_MAX_QUEUED_MS", 3000.0)
    conversations, connector, channel, kids = world
    server.reply_audio_ms, server.chunk_ms = 8000, 200  # nobody reads playback here: all of it queues
    conversation = await conversations.start(start_request(channel))
    await one_spoken_turn(conversation, connector.last, kids[0], server)
    status = conversation.status()
    assert 2900 <= status.playback_buffered_ms <= 3000
    await conversations.stop(GUILD)
    turns = await repository.get_turns(GUILD, conversation.session_id)
    assert [t.role for t in turns] == ["child", "tutor"] and turns[1].text == server.reply_text

"""How long a pause ends a child's turn: the rule, and a conversation that follows it."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.turn_taking import DEFAULT_PAUSE_MS, YOUNGER_EXTRA_MS, turn_pause_ms
from tests.bot.test_tutor import GUILD, live_server, request, speech, wait_until, world

__all__ = ["live_server", "world"]  # fixtures shared with test_tutor


@pytest.mark.parametrize(("setting", "age", "expected"), [
    (None, 8, 1200), (None, 6, 1700), (None, 7, 1200), (900, 10, 900), (900, 5, 1400),
])
def test_the_pause_follows_the_server_setting_and_age(setting, age, expected):
    """The server's setting (or the default chosen from `python -m bench.turn_taking`: 1.2 s) for 7 and up;
    under 7 half a second longer."""
    assert turn_pause_ms(setting, age) == expected


async def test_the_setting_is_stored_cleared_and_checked(repository):
    """turn_pause_ms is saved, None goes back to the default, and out-of-range values change nothing."""
    assert (await repository.get_settings(GUILD)).turn_pause_ms is None
    assert (await repository.update_settings(GUILD, turn_pause_ms=800)).turn_pause_ms == 800
    with pytest.raises(ValueError, match="turn_pause_ms"):
        await repository.update_settings(GUILD, turn_pause_ms=100)
    assert (await repository.update_settings(GUILD, turn_pause_ms=None)).turn_pause_ms is None


async def test_a_young_childs_conversation_waits_out_a_mid_sentence_pause(world, live_server, repository):
    """Age 5 and a 1.4 s pause mid-sentence: one child turn, one reply (the 7+ default and the old 500 ms end it
    in the pause); the setup asks the server's own detection to wait a little longer than the bot does."""
    conversations, connector, _, channel, kids = world
    conversation = await conversations.start(request(channel, age=5))
    assert conversation.turn_pause_ms == DEFAULT_PAUSE_MS + YOUNGER_EXTRA_MS
    detection = live_server.connections[0].setup["realtimeInputConfig"]["automatic_activity_detection"]
    assert detection["silence_duration_ms"] > conversation.turn_pause_ms
    voice = connector.last
    # Joined off the loop: the bot hears each frame as it comes, as from voice-recv's thread.
    await voice.say(kids[0], speech(0.6))
    await asyncio.sleep(1.4)  # thinking, mid-sentence
    await voice.say(kids[0], speech(0.6))
    spoken = time.monotonic()
    await live_server.wait_for(lambda: live_server.replies_sent >= 1)
    # A turn cut in the pause would have had its second end (one tail after the speech) by now.
    await asyncio.sleep(max(0.0, spoken + conversation.turn_pause_ms / 1000 + 0.4 - time.monotonic()))
    assert live_server.connections[0].audio_stream_ends == 1 and live_server.replies_sent == 1
    await wait_until(lambda: conversation.status().turns >= 2)
    await conversations.stop(GUILD)


async def test_a_server_setting_shortens_the_pause(world, live_server, repository):
    """A moderator's 600 ms for this server: an 8-year-old's 1.2 s pause now ends the turn (two replies)."""
    conversations, connector, _, channel, kids = world
    await repository.update_settings(GUILD, turn_pause_ms=600)
    conversation = await conversations.start(request(channel, age=8))
    assert conversation.turn_pause_ms == 600
    voice = connector.last
    await voice.say(kids[0], speech(0.6))
    await asyncio.sleep(1.2)
    await voice.say(kids[0], speech(0.6))
    await live_server.wait_for(lambda: live_server.connections[0].audio_stream_ends >= 2, within=10)
    await conversations.stop(GUILD)

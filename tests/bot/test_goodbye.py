"""TutorVoice: a conversation ends after the tutor's goodbye has been said and played, never over it."""

import asyncio

import pytest

import bot.goodbye
from bot.goodbye import TutorVoice


class Playback:
    buffered_ms = 0.0


async def test_end_waits_for_the_goodbye_being_spoken():
    """end_conversation mid-reply: done only after that turn completes and its queued audio plays."""
    playback = Playback()
    voice = TutorVoice(playback)
    voice.reply_audio()
    done = asyncio.ensure_future(voice.until_goodbye_done())
    await asyncio.sleep(0.05)
    assert not done.done()
    playback.buffered_ms = 60
    voice.reply_ended()
    await asyncio.sleep(0.02)
    assert not done.done()  # the last 60 ms are still playing
    await asyncio.wait_for(done, 1)


async def test_end_before_the_goodbye_waits_for_it_to_start(monkeypatch):
    """The call may come before the goodbye's audio: a reply starting within the grace is waited for."""
    voice = TutorVoice(Playback())
    done = asyncio.ensure_future(voice.until_goodbye_done())
    await asyncio.sleep(0.05)
    voice.reply_audio()
    await asyncio.sleep(0.05)
    assert not done.done()
    voice.reply_ended()
    await asyncio.wait_for(done, 1)


async def test_end_after_the_goodbye_needs_no_reply(monkeypatch):
    """The goodbye already over and nothing comes: done after the short grace, not the long timeout."""
    monkeypatch.setattr(bot.goodbye, "REPLY_START_GRACE_S", 0.05)
    voice = TutorVoice(Playback())
    await asyncio.wait_for(voice.until_goodbye_done(), 1)


async def test_a_goodbye_that_never_ends_is_bounded(monkeypatch):
    """A reply that never completes cannot keep the call open."""
    monkeypatch.setattr(bot.goodbye, "GOODBYE_TIMEOUT_S", 0.1)
    voice = TutorVoice(Playback())
    voice.reply_audio()
    await asyncio.wait_for(voice.until_goodbye_done(), 1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(voice.next_reply_end(), 0.05)

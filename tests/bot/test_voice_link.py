"""VoiceLink's playback through discord.py's real AudioPlayer, DAVE and UDP: idle is silent, replies play.

The voice client is the real `DaveVoiceRecvClient` of the DAVE harness; what it sends is read at the
harness's "voice server" socket and decrypted as the kid's client would (transport, then DAVE).
"""

from __future__ import annotations

import asyncio
import gc
import threading

import davey
import discord.opus
import numpy as np
import pytest
from discord.ext.voice_recv import rtp as vr_rtp
from discord.ext.voice_recv.reader import PacketDecryptor

import bot.audio.dave.receive
import bot.voice_link
from bot.audio.playback import PlaybackSource
from bot.audio.voice_encoder import TUTOR_VOICE, OpusVoice
from bot.voice_link import VoiceLink
from tests.dave_harness import BOT_ID, MODE, VoiceServerHarness
from tests.signals import peak_frequency, tone

RTP_VOICE = 0x78  # discord.py's payload type; keepalives are not RTP


@pytest.fixture
async def harness(monkeypatch):
    monkeypatch.setattr(bot.audio.dave.receive, "KEEPALIVE_SECONDS", 0.05)
    monkeypatch.setattr(bot.voice_link, "VOICE_DISCONNECT_TIMEOUT_S", 0.2)  # no gateway acknowledges here
    h = await VoiceServerHarness.start()
    yield h
    await h.close()
    for thread in threading.enumerate():
        if thread.name.startswith("voice-udp-keepalive"):
            await asyncio.to_thread(thread.join, 2.0)
    gc.collect()


@pytest.fixture
async def link(harness):
    async def connect(channel):
        return harness.vc

    playback = PlaybackSource()
    voice_link = VoiceLink(harness.channel, connect, lambda *_: None, playback, tags={})
    await voice_link.open()
    yield voice_link, playback
    await voice_link.close()


def sent_voice(harness: VoiceServerHarness) -> list[bytes]:
    """The Opus packets the bot sent since the last call, decrypted as the kid's client would."""
    server = harness.server
    decryptor = PacketDecryptor(MODE, server.transport_key)
    start = _read_upto.get(id(server), 0)
    datagrams = server.rtp_from_bot[start:]
    _read_upto[id(server)] = start + len(datagrams)
    packets = []
    for datagram in datagrams:
        plain = bytes(decryptor.decrypt_rtp(vr_rtp.decode_rtp(datagram)))
        packets.append(harness.speaker.session.decrypt(BOT_ID, davey.MediaType.audio, plain))
    return packets


_read_upto: dict[int, int] = {}  # per voice server: how many of the bot's datagrams sent_voice() has read


def speaking_states(harness: VoiceServerHarness) -> list[int]:
    """Every SPEAKING value the bot told the voice gateway, in order."""
    return [data["speaking"] for data in harness.server.json_ops(5)]


async def until(condition, within: float = 3.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)


async def test_an_idle_tutor_sends_nothing_and_is_not_speaking(harness, link):
    """With nothing to say the real player is paused: 0 packets in a second, SPEAKING off."""
    _, playback = link
    await until(lambda: playback.is_paused)
    await asyncio.sleep(0.1)  # discord.py's five Opus silence frames on pausing
    sent_voice(harness)
    await asyncio.sleep(1.0)
    assert sent_voice(harness) == []
    assert speaking_states(harness)[-1] == 0
    assert harness.vc.is_paused()


async def test_a_reply_resumes_the_player_plays_and_pauses_again(harness, link):
    """A reply wakes the player, reaches the kid as TUTOR_VOICE Opus, and then the player rests again."""
    _, playback = link
    await until(lambda: playback.is_paused)
    await asyncio.sleep(0.1)
    sent_voice(harness)
    playback.feed(tone(440, 24_000, 0.4))
    playback.end_of_turn()
    assert not playback.is_paused
    await until(lambda: playback.is_paused)
    await asyncio.sleep(0.1)
    packets = sent_voice(harness)
    voiced = [p for p in packets if p != discord.opus.OPUS_SILENCE]
    assert 20 <= len(voiced) <= 22  # 0.4 s of reply, plus the one silent frame read before pausing
    assert {discord.opus._lib.opus_packet_get_bandwidth(p) for p in voiced[2:-1]} == {
        discord.opus.band_ctl[TUTOR_VOICE.bandwidth]}
    decoder = discord.opus.Decoder()
    left = np.frombuffer(b"".join(decoder.decode(p, fec=False) for p in voiced), "<i2")[0::2]
    assert abs(peak_frequency(left, 48_000) - 440) < 10
    await asyncio.sleep(0.5)
    assert sent_voice(harness) == []
    assert speaking_states(harness) == [0, 1, 0, 1, 0]  # connect; player starts, rests, replies, rests


async def test_the_voice_client_plays_the_tutor_voice_encoder(harness, link):
    """What VoiceLink hands discord.py is OpusVoice over a tap of the PlaybackSource, encoding TUTOR_VOICE."""
    _, playback = link
    source = harness.vc.source
    assert isinstance(source, OpusVoice) and source.pcm.playback is playback  # OpusVoice over a tap
    assert source.encoder.settings == TUTOR_VOICE

"""The call moves under the bot: a new voice server, a crashed voice websocket, a resume the server refuses.

Everything runs through discord.py's own connect/reconnect code (`VoiceClient.connect`, `_poll_voice_ws`, the
4014 reconnect in `_potential_reconnect`, the 4015 resume) against `FakeVoiceServer` (TLS websocket + UDP) and a
main gateway answering voice state updates as Discord does; the bot plays a tone through discord.py's own
AudioPlayer thread the whole time, and the kids' clients decrypt what it says with their own DAVE sessions.
"""

from __future__ import annotations

import discord
import numpy as np
import pytest
from discord.voice_state import VoiceConnectionState

from bot.audio.dave import DaveVoiceRecvClient, guarded_hook
from tests.dave_harness import (
    CHANNEL_ID,
    GUILD_ID,
    Recorder,
    RemoteUser,
    VoiceServerHarness,
    frames_lost,
    reference_decode,
)
from tests.dave_harness import sine_frames as tone_frames
from tests.signals import peak_frequency


class Tone(discord.AudioSource):
    """What the tutor says: a 440 Hz tone, 20 ms at a time, read by discord.py's AudioPlayer thread."""

    def __init__(self) -> None:
        self._frames = tone_frames(50, 440.0)
        self._next = 0

    def read(self) -> bytes:
        self._next += 1
        return self._frames[self._next % len(self._frames)]


@pytest.fixture
async def call():
    h = await VoiceServerHarness.start(parties=2)
    h.recorder = Recorder()
    h.vc.listen(h.recorder.sink())
    h.vc.play(Tone())
    yield h
    await h.close()


def heard_since(h: VoiceServerHarness, kid: RemoteUser, first_seq: int) -> list[bytes]:
    """The PCM of `kid`'s frames from `first_seq` on, as the sink got them."""
    return [f.pcm for f in h.recorder.of(kid.ssrc) if f.sequence >= first_seq]


def assert_heard_exactly_since(h: VoiceServerHarness, first_seq: dict[int, int]) -> None:
    """Every kid's frames from `first_seq[user_id]` on arrived, in order, bit-exact from a fresh decoder."""
    for kid in h.parties:
        sent = [kid.sent[seq] for seq in sorted(kid.sent) if seq >= first_seq[kid.user_id]]
        got = heard_since(h, kid, first_seq[kid.user_id])
        assert len(got) >= len(sent) - 1, f"kid {kid.user_id}: {len(got)} of {len(sent)} frames heard"
        assert got == reference_decode(sent)[: len(got)]


async def everyone_is_heard_again(h: VoiceServerHarness, frames: int = 6) -> None:
    """Each kid says `frames` more frames: all but the newest arrive, in order, bit-exact from a fresh decoder."""
    first_seq = {kid.user_id: kid.seq for kid in h.parties}
    await h.speak(h.parties, frames)
    assert await h.wait_until(lambda: all(
        len(heard_since(h, kid, first_seq[kid.user_id])) >= frames - 1 for kid in h.parties), within=3.0)
    assert_heard_exactly_since(h, first_seq)


async def the_bot_is_heard(h: VoiceServerHarness, kid: RemoteUser, since: int, frames: int = 15) -> np.ndarray:
    """Wait until `kid`'s client has decoded `frames` frames of the bot's voice sent after packet `since`."""
    assert await h.wait_until(lambda: len(h.bot_said(kid, since=since)) >= frames, within=3.0), (
        f"the kid decoded {len(h.bot_said(kid, since=since))} of the {len(h.server.rtp_from_bot) - since} packets "
        f"the bot sent on {h.server.endpoint} (playing: {h.vc.is_playing()}, can encrypt: "
        f"{h.vc._connection.can_encrypt})")
    left = np.frombuffer(b"".join(h.bot_said(kid, since=since)), "<i2")[0::2]
    assert abs(peak_frequency(left, 48_000) - 440) < 15
    return left


async def test_a_voice_server_move_keeps_the_bot_hearing_and_speaking(call):
    """VOICE_SERVER_UPDATE mid-call: discord.py closes (4014), reconnects; receive, DAVE and playback carry on."""
    h = call
    vc: DaveVoiceRecvClient = h.vc
    await h.speak(h.parties, 5)
    await the_bot_is_heard(h, h.speaker, 0)
    old, reader, player, socket = h.server, vc._reader, vc._player, vc._connection.socket
    await h.move()
    assert old.close_codes == [4014] and h.server.connections == 1 and h.main_gateway.calls == [(1, CHANNEL_ID)]
    assert vc.is_connected() and vc.voice_gateway_alive()
    assert vc._reader is reader and vc.listener_alive() and vc._connection.socket is socket  # same listener, socket
    assert vc._player is player and vc.is_playing()
    assert vc._connection.can_encrypt and vc._connection.dave_session.epoch == h.speaker.session.epoch

    await everyone_is_heard_again(h, 8)  # new SSRCs, new transport key, new MLS group
    assert {kid.ssrc for kid in h.parties} <= set(vc._ssrc_to_id) and not {2002, 2003} & set(vc._ssrc_to_id)
    for kid in h.parties:
        await the_bot_is_heard(h, kid, 0)  # through the new server, DAVE-encrypted for the new group


async def test_a_voice_websocket_resume_loses_nothing(call):
    """4015 ("voice server crashed"): the bot resumes (op 7 → op 9), UDP never stopped, so no frame is lost;
    a message sent while it was away is re-sent and handled; DAVE and the voice session are untouched."""
    h = call
    vc: DaveVoiceRecvClient = h.vc
    await h.speak(h.parties, 4)
    session, epoch = vc._connection.dave_session, vc._connection.dave_session.epoch
    said_before = len(h.server.rtp_from_bot)

    async def while_away(step: str) -> None:
        if step == "closed":
            assert vc.is_connected()  # discord.py does not flinch, and neither does the audio
            await h.speak(h.parties, 4)
            await h.server.send_json(11, {"user_ids": ["333"]})  # kept by the server for the resume
            await h.server.send_json(5, {"user_id": "333", "ssrc": 3003, "speaking": 1})
        else:
            await h.speak(h.parties, 4)

    await h.crash(4015, between=while_away)
    assert h.server.resumes == [True] and len(h.server.json_ops(0)) == 1  # resumed, never identified again
    assert h.main_gateway.calls == [(1, CHANNEL_ID)]  # and never asked the main gateway to rejoin
    assert vc._get_id_from_ssrc(3003) == 333  # the missed op 5 was re-sent and handled
    assert vc._connection.dave_session is session and session.epoch == epoch and vc._connection.can_encrypt
    await h.speak(h.parties, 3)
    await h.wait_until(lambda: all(
        len(h.recorder.of(kid.ssrc)) >= len(kid.sent) - 1 for kid in h.parties), within=3.0)
    for kid in h.parties:
        loss = frames_lost(kid, h.recorder)
        assert loss.total == 0, f"kid {kid.user_id} lost {loss}"
    await the_bot_is_heard(h, h.speaker, said_before)
    await h.gateway(21, {"transition_id": 90, "protocol_version": 0})  # the new socket carries DAVE ops too
    assert {"transition_id": 90} in h.server.json_ops(23)


async def test_a_refused_resume_falls_back_to_a_fresh_connection(call):
    """If the server no longer knows the session (4006 on RESUME), the bot joins afresh and hears again."""
    h = call
    vc: DaveVoiceRecvClient = h.vc
    await h.speak(h.parties, 3)
    key_packages = len(h.server.binary_ops(26))
    h.server.forget_session()
    await h.server.close(4015)
    await h.welcome_back(key_packages_before=key_packages)
    assert h.server.resumes == [False] and h.server.close_codes[-2:] == [4015, 4006]
    assert vc.is_connected() and vc.listener_alive() and vc._connection.can_encrypt
    await everyone_is_heard_again(h)
    await the_bot_is_heard(h, h.speaker, 0)


class _StockResumeClient(DaveVoiceRecvClient):
    """The shim without its resume: discord.py 2.7.1's own VoiceConnectionState."""

    def create_connection_state(self) -> VoiceConnectionState:
        return VoiceConnectionState(self, hook=guarded_hook)


async def test_discord_py_alone_does_not_resume_and_leaves_the_call():
    """Negative control: discord.py 2.7.1's 4015 path asks the main gateway to rejoin the channel it is in, waits
    for a VOICE_SERVER_UPDATE that never comes, and disconnects after its timeout (1 s here, 30 s by default)."""
    h = await VoiceServerHarness.start(_StockResumeClient, connect_timeout=1.0)
    try:
        await h.server.close(4015)
        assert await h.wait_until(lambda: not h.vc.is_connected(), within=5.0)
        assert h.server.resumes == [] and h.main_gateway.calls == [(1, CHANNEL_ID), (1, CHANNEL_ID), (1, None)]
    finally:
        await h.close()


async def test_a_dropped_voice_websocket_reconnects_and_the_bot_hears_again(call):
    """The TCP connection is cut (1006): discord.py leaves and rejoins (after its backoff) on a new UDP socket,
    which the shim's reader picks up; the kids welcome the bot into a fresh group and are heard exactly again."""
    h = call
    vc: DaveVoiceRecvClient = h.vc
    await h.speak(h.parties, 3)
    key_packages, old_socket = len(h.server.binary_ops(26)), vc._connection.socket
    h.server.drop()
    await h.welcome_back(key_packages_before=key_packages)
    assert h.server.close_codes[0] is None and vc._connection.socket is not old_socket
    assert h.main_gateway.calls == [(1, CHANNEL_ID), (1, None), (1, CHANNEL_ID)]  # left and joined again
    assert vc.is_connected() and vc.listener_alive() and vc.is_playing() and vc._connection.can_encrypt
    await everyone_is_heard_again(h)
    await the_bot_is_heard(h, h.speaker, 0)


async def test_a_kid_who_does_not_follow_the_move_leaves_nothing_behind(call):
    """A kid who hangs up while the call moves gets no op 13 from the new server: READY starts the new voice
    session without the old one's streams, so neither their SSRC mapping nor their decoder lingers."""
    h = call
    vc: DaveVoiceRecvClient = h.vc
    await h.speak(h.parties, 4)
    gone = h.parties.pop()
    router = vc._reader.packet_router
    assert await h.wait_until(lambda: gone.ssrc in router.decoders)
    await h.move()
    await everyone_is_heard_again(h)
    assert vc._get_id_from_ssrc(gone.ssrc) is None and gone.user_id not in vc._id_to_ssrc
    assert gone.ssrc not in router.decoders


async def test_a_voice_server_that_dies_announces_no_endpoint_then_the_new_one(call):
    """How Discord moves a call off a dying voice server: VOICE_SERVER_UPDATE with endpoint null (discord.py
    waits), the old server goes away (4015; the resume it tries there fails), then the rejoin brings the new
    server's endpoint. The bot connects there, is welcomed into the kids' new group, and
    hears and speaks again."""
    h = call
    vc: DaveVoiceRecvClient = h.vc
    await h.speak(h.parties, 3)
    old = h.server
    h.server = await h._new_server()
    h.client._connection.parse_voice_server_update({"token": h.server.token, "guild_id": str(GUILD_ID),
                                                    "endpoint": None})
    await old.close(4015)
    await old.stop()
    await h.welcome_back(key_packages_before=0)
    assert not any(old.resumes) and h.server.connections == 1
    assert vc.is_connected() and vc.listener_alive() and vc._connection.can_encrypt
    await everyone_is_heard_again(h)
    await the_bot_is_heard(h, h.speaker, 0)

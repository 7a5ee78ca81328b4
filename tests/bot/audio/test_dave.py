"""DAVE receive through the real stack: discord.py's voice gateway, voice-recv's reader, the shim, loopback UDP."""

from __future__ import annotations

import logging
import threading

import discord
import numpy as np
import pytest
from discord.ext import voice_recv
from discord.ext.voice_recv.reader import AudioReader, SpeakingTimer
from discord.ext.voice_recv.router import PacketRouter
from discord.gateway import DiscordVoiceWebSocket
from discord.voice_state import SocketReader, VoiceConnectionState

from bot.audio.dave import (
    OPUS_SILENCE,
    DavePacketRouter,
    DaveVoiceRecvClient,
    ReceiveStats,
    shim_compatibility_problems,
)
from tests.dave_harness import (
    SPEAKER_ID,
    SPEAKER_SSRC,
    Recorder,
    RemoteUser,
    VoiceServerHarness,
    encode_opus,
    garbage_datagram,
    reference_decode,
    sine_frames,
    truncated_datagram,
)


def dominant_hz(pcm: bytes) -> float:
    left = np.frombuffer(pcm, dtype="<i2")[0::2].astype(float)
    spectrum = np.abs(np.fft.rfft(left))
    return float(np.argmax(spectrum) * 48_000 / len(left))


def test_shim_relies_only_on_attributes_that_exist():
    """Every private attribute and signature the shim uses is present in the installed libraries."""
    assert shim_compatibility_problems() == []


def _state_init_without_dave_downgraded(self, voice_client, *, hook=None):
    self.dave_session = None
    self.dave_protocol_version = 0
    self._runner = None


def _reader_init_without_error(self, sink, voice_client, *, after=None):
    self.packet_router = self.keepalive = self.decryptor = self.voice_client = self.speaking_timer = None


@pytest.mark.parametrize(("owner", "name", "replacement", "reported"), [
    (PacketRouter, "feed_rtp", lambda self, packet, extra: None, "feed_rtp(self, packet)"),
    (PacketRouter, "destroy_decoder", None, "destroy_decoder"),
    (VoiceConnectionState, "__init__", _state_init_without_dave_downgraded, "dave_downgraded"),
    (VoiceConnectionState, "_execute_transition", None, "op 22"),
    (DiscordVoiceWebSocket, "received_message", lambda self, msg: None, "awaits the hook"),
    (VoiceConnectionState, "_connect", lambda self, reconnect, timeout, deaf, mute: None, "resume=True on 4015"),
    (SocketReader, "_do_run", lambda self: None, "SocketReader._do_run"),
    (discord.VoiceClient, "__init__", lambda self, client, channel: None, "create_connection_state"),
    (SpeakingTimer, "drop_ssrc", None, "speaking_timer.drop_ssrc"),
    (AudioReader, "__init__", _reader_init_without_error, "AudioReader.error"),
], ids=["feed_rtp signature", "destroy_decoder gone", "dave_downgraded gone", "transition code gone", "hook call",
        "_connect signature", "socket reader loop", "connection state factory", "speaking timer", "reader error"])
def test_shim_check_reports_a_changed_library(monkeypatch, owner, name, replacement, reported):
    """When a private the shim relies on changes or disappears, the check names it (so the test above fails)."""
    if replacement is None:
        monkeypatch.delattr(owner, name)
    else:
        monkeypatch.setattr(owner, name, replacement)
    problems = shim_compatibility_problems()
    assert any(reported in problem for problem in problems), problems


async def test_sine_arrives_bit_exact(harness):
    """30 DAVE-encrypted sine frames arrive decoded exactly as a direct Opus decode (the last waits in the buffer)."""
    opus = encode_opus(sine_frames(30))
    expected = reference_decode(opus)
    recorder = Recorder()
    harness.vc.listen(recorder.sink())
    assert isinstance(harness.vc._reader.packet_router, DavePacketRouter)

    await harness.send_paced(harness.speaker.frame(f) for f in opus)
    assert await harness.wait_until(lambda: len(recorder.of(SPEAKER_SSRC)) >= 29)

    got = recorder.of(SPEAKER_SSRC)
    assert [f.pcm for f in got] == expected[: len(got)]
    assert all(f.user is not None and f.user.id == SPEAKER_ID for f in got)
    assert abs(dominant_hz(b"".join(f.pcm for f in got)) - 440) < 5
    assert (await harness.settled(30))["decrypted"] == 30
    assert harness.vc.receive_stats.last_decrypt_ok_at is not None


async def test_silence_frames_pass_before_davey(harness):
    """Unencrypted F8 FF FE frames pass the shim as silence."""
    recorder = Recorder()
    harness.vc.listen(recorder.sink())
    await harness.send_paced([harness.speaker.frame(OPUS_SILENCE) for _ in range(6)])
    assert await harness.wait_until(lambda: len(recorder.of(SPEAKER_SSRC)) >= 5)
    assert (await harness.settled(6))["passed_silence"] == 6
    assert all(max(np.abs(np.frombuffer(f.pcm, "<i2")), default=0) < 50 for f in recorder.of(SPEAKER_SSRC))


async def test_tampered_frame_is_concealed_and_reader_survives(harness):
    """A frame that fails DAVE becomes a PLC frame (opus None) in sequence; later frames still arrive exactly."""
    opus = encode_opus(sine_frames(12))
    recorder = Recorder()
    harness.vc.listen(recorder.sink())
    datagrams = [harness.speaker.tampered(f) if i == 5 else harness.speaker.frame(f) for i, f in enumerate(opus)]
    await harness.send_paced(datagrams)
    assert await harness.wait_until(lambda: len(recorder.of(SPEAKER_SSRC)) >= 11)

    got = recorder.of(SPEAKER_SSRC)
    assert [f.sequence - 100 for f in got] == list(range(len(got)))
    assert got[5].opus is None and len(got[5].pcm) == 3840
    assert got[4].pcm == reference_decode(opus[:5])[4]
    stats = await harness.settled(12)
    assert (stats["concealed"], stats["decrypted"]) == (1, 11)
    assert harness.vc.listener_alive()


async def test_unknown_ssrc_is_dropped_without_a_decoder(harness):
    """Packets from an SSRC no op 5 announced are counted and dropped; no decoder is created for them."""
    stranger = harness.add_remote_user(333, 3003)
    recorder = Recorder()
    harness.vc.listen(recorder.sink())
    await harness.send_paced(stranger.frame(f) for f in encode_opus(sine_frames(5)))
    await harness.send_paced(harness.speaker.frame(f) for f in encode_opus(sine_frames(3)))
    assert await harness.wait_until(lambda: len(recorder.of(SPEAKER_SSRC)) >= 2)
    assert (await harness.settled(8))["dropped_unknown_ssrc"] == 5
    assert recorder.of(3003) == []
    assert 3003 not in harness.vc._reader.packet_router.decoders


async def test_transport_garbage_is_counted_and_survived(harness, caplog):
    """Truncated datagrams and transport-undecryptable bytes are dropped; the reader keeps going."""
    recorder = Recorder()
    harness.vc.listen(recorder.sink())
    with caplog.at_level(logging.ERROR):
        harness.send([truncated_datagram() for _ in range(5)] + [garbage_datagram(SPEAKER_SSRC) for _ in range(5)])
        await harness.send_paced(harness.speaker.frame(f) for f in encode_opus(sine_frames(4)))
        assert await harness.wait_until(lambda: len(recorder.of(SPEAKER_SSRC)) >= 3)
    assert (await harness.settled(14))["dropped_malformed"] == 10
    assert harness.vc.listener_alive()


async def test_padded_payload_decrypts(harness):
    """RTP padding (which voice-recv never strips) is removed before DAVE; audio stays bit-exact."""
    opus = encode_opus(sine_frames(8))
    recorder = Recorder()
    harness.vc.listen(recorder.sink())
    await harness.send_paced(harness.speaker.frame(f, padding=1 + i) for i, f in enumerate(opus))
    assert await harness.wait_until(lambda: len(recorder.of(SPEAKER_SSRC)) >= 7)
    got = recorder.of(SPEAKER_SSRC)
    assert [f.pcm for f in got] == reference_decode(opus)[: len(got)]
    assert (await harness.settled(8))["decrypted"] == 8


async def test_bad_padding_is_dropped_as_malformed(harness):
    """A padding count of 0 is rejected before davey is asked."""
    harness.vc.listen(Recorder().sink())
    await harness.send_paced([harness.speaker.bad_padding(f) for f in encode_opus(sine_frames(3))])
    assert await harness.wait_until(lambda: harness.vc.receive_stats.dropped_malformed == 3)
    assert harness.vc.receive_stats.concealed == 0


async def test_op13_before_listen_is_harmless(harness):
    """A user leaving before listen() does not raise out of discord.py's gateway handler (upstream it does)."""
    await harness.gateway(13, {"user_id": str(SPEAKER_ID)})
    assert harness.vc._get_id_from_ssrc(SPEAKER_SSRC) is None
    assert harness.vc.voice_gateway_alive()


async def test_upstream_op13_before_listen_kills_the_voice_websocket_task():
    """Negative control: stock voice-recv's op 13 before listen() raises inside discord.py's poller, which dies."""
    h = await VoiceServerHarness.start(voice_recv.VoiceRecvClient)
    try:
        await h.server.send_json(13, {"user_id": str(SPEAKER_ID)})
        runner = h.vc._connection._runner
        assert await h.wait_until(runner.done)
        assert isinstance(runner.exception(), AttributeError)
        assert h.vc.is_connected()  # and nothing says so: discord.py still reports a connection
        assert h.vc._get_id_from_ssrc(SPEAKER_SSRC) == SPEAKER_ID  # upstream also leaves the map half-cleared
    finally:
        await h.close()


async def test_gateway_hook_exception_is_contained(harness, caplog):
    """A malformed op 12 (missing keys) is logged, not raised into discord.py's voice websocket task."""
    with caplog.at_level(logging.ERROR, logger="bot.audio.dave"):
        await harness.gateway(12, {"user_id": str(SPEAKER_ID), "audio_ssrc": 4004})
    assert any(r.getMessage() == "dave.gateway_hook_failed" for r in caplog.records)


async def test_downgraded_call_passes_plain_opus(harness):
    """After a downgrade to protocol 0 the stale session is not used: plain Opus passes through."""
    await harness.gateway(4, {"mode": "aead_xchacha20_poly1305_rtpsize",
                              "secret_key": list(harness.transport_key), "dave_protocol_version": 0})
    assert harness.vc._connection.dave_session is not None
    opus = encode_opus(sine_frames(5))
    harness.speaker.session = None  # the client now sends plain Opus
    recorder = Recorder()
    harness.vc.listen(recorder.sink())
    await harness.send_paced(harness.speaker.frame(f) for f in opus)
    assert await harness.wait_until(lambda: len(recorder.of(SPEAKER_SSRC)) >= 4)
    got = recorder.of(SPEAKER_SSRC)
    assert [f.pcm for f in got] == reference_decode(opus)[: len(got)]
    assert (await harness.settled(5))["passed_plain"] == 5


async def test_stock_voice_recv_cannot_hear_dave(harness):
    """Negative control: the stock reader on the same stream yields no correct frame (it dies or decodes noise)."""
    opus = encode_opus(sine_frames(20))
    expected = reference_decode(opus)
    recorder = Recorder()
    errors: list[Exception | None] = []
    voice_recv.VoiceRecvClient.listen(harness.vc, recorder.sink(), after=errors.append)
    await harness.send_paced(harness.speaker.frame(f) for f in opus)
    await harness.wait_until(lambda: bool(errors), within=1.0)
    got = recorder.of(SPEAKER_SSRC)
    assert sum(f.pcm == expected[f.sequence - 100] for f in got) == 0
    assert errors or not harness.vc.is_listening() or len(got) > 0


async def test_failing_decrypts_start_a_streak_that_success_ends(harness):
    """Frames from a member without a DAVE key are concealed and start the failure streak; a good frame ends it."""
    outsider = harness.add_remote_user(444, 4004)
    await harness.map_ssrc(444, 4004)
    harness.vc.listen(Recorder().sink())
    await harness.send_paced(outsider.frame(f) for f in encode_opus(sine_frames(5)))
    stats = harness.vc.receive_stats
    assert await harness.wait_until(lambda: stats.concealed == 5)
    assert stats.failing_since is not None and stats.all_failing_for(0.0)
    await harness.send_paced([harness.speaker.frame(encode_opus(sine_frames(1))[0])])
    assert await harness.wait_until(lambda: stats.decrypted == 1)
    assert stats.failing_since is None and not stats.all_failing_for(0.0)


def test_all_failing_for_measures_the_failure_span():
    """all_failing_for(N) turns true after N s of failures with a ready session; not-ready failures reset it."""
    stats = ReceiveStats()
    stats.record_decrypt(False, session_ready=True, now=100.0)
    stats.record_decrypt(False, session_ready=True, now=103.0)
    assert stats.all_failing_for(3.0) and not stats.all_failing_for(3.5)
    stats.record_decrypt(False, session_ready=False, now=104.0)
    assert not stats.all_failing_for(0.0)
    stats.record_decrypt(False, session_ready=True, now=105.0)
    stats.record_decrypt(True, session_ready=True, now=106.0)
    assert not stats.all_failing_for(0.0)
    assert (stats.concealed, stats.decrypted, stats.last_decrypt_ok_at) == (4, 1, 106.0)


async def test_listener_alive_tracks_the_reader(harness):
    """listener_alive() is False before listen(), True while listening, False after stop_listening()."""
    vc: DaveVoiceRecvClient = harness.vc
    assert not vc.listener_alive()
    vc.listen(Recorder().sink())
    assert vc.listener_alive()
    vc.stop_listening()
    assert not vc.listener_alive()


async def test_a_stream_that_changes_hands_starts_fresh(harness):
    """op 5 with a kid's new SSRC (their client reconnected, no op 13) or an SSRC now someone else's: new decoder."""
    vc = harness.vc
    recorder = Recorder()
    vc.listen(recorder.sink())
    await harness.speak([harness.speaker], 4)
    router = vc._reader.packet_router
    assert await harness.wait_until(lambda: SPEAKER_SSRC in router.decoders)

    await harness.map_ssrc(SPEAKER_ID, 2102)  # same kid, new SSRC
    assert SPEAKER_SSRC not in router.decoders and vc._get_id_from_ssrc(SPEAKER_SSRC) is None
    again = RemoteUser(SPEAKER_ID, 2102, harness.transport_key, session=harness.speaker.session,
                       voice=harness.speaker.voice)
    await harness.speak([again], 6)
    assert await harness.wait_until(lambda: len(recorder.of(2102)) >= 5)
    got = recorder.of(2102)
    assert [f.pcm for f in got] == reference_decode(again.sent_in_order())[: len(got)]

    first = router.decoders[2102]
    await harness.map_ssrc(SPEAKER_ID + 1, 2102)  # the SSRC now belongs to someone else
    assert 2102 not in router.decoders or router.decoders[2102] is not first


async def test_the_connection_reads_udp_with_one_prompt_reader(harness):
    """The shim's UDP reader replaced discord.py's before any socket existed; the upstream thread has ended."""
    connection = harness.vc._connection
    readers = [t for t in threading.enumerate() if getattr(t, "state", None) is connection]
    assert readers == [connection._socket_reader]
    assert type(readers[0]).__name__ == "_PromptSocketReader"

"""The tutor's voice encoder: TUTOR_VOICE reaches libopus, OpusVoice hands discord.py real Opus packets."""

import ctypes

import discord.opus
import numpy as np
import pytest

from bot.audio.convert import Upsampler
from bot.audio.formats import DISCORD_FRAME_BYTES
from bot.audio.playback import PlaybackSource
from bot.audio.voice_encoder import (
    CTL_GET_BANDWIDTH,
    CTL_GET_BITRATE,
    CTL_GET_COMPLEXITY,
    CTL_GET_FORCE_CHANNELS,
    CTL_GET_SIGNAL,
    DISCORD_DEFAULTS,
    OPUS_AUTO,
    TUTOR_VOICE,
    OpusSettings,
    OpusVoice,
    TutorVoiceEncoder,
    encoder_shim_problems,
)
from tests.signals import peak_frequency, tone

if not discord.opus.is_loaded():
    discord.opus._load_default()


def _packet_bandwidth(packet: bytes) -> int:
    return discord.opus._lib.opus_packet_get_bandwidth(packet)


def _packet_channels(packet: bytes) -> int:
    return discord.opus._lib.opus_packet_get_nb_channels(packet)


def test_the_discord_internals_the_encoder_uses_are_there():
    """discord.opus._lib.opus_encoder_ctl and Encoder._state still exist (the shim's compatibility check)."""
    assert encoder_shim_problems() == []


def test_tutor_voice_settings_reach_libopus():
    """Every TUTOR_VOICE value reads back from the libopus encoder itself."""
    encoder = TutorVoiceEncoder(TUTOR_VOICE)
    encoder.encode(tone(440, 48_000, 0.02, channels=2), 960)  # the bandwidth reads back once a frame is coded
    assert encoder.get(CTL_GET_COMPLEXITY) == TUTOR_VOICE.complexity == 5
    assert encoder.get(CTL_GET_BANDWIDTH) == discord.opus.band_ctl[TUTOR_VOICE.bandwidth]
    assert encoder.get(CTL_GET_SIGNAL) == discord.opus.signal_ctl[TUTOR_VOICE.signal_type]
    assert encoder.get(CTL_GET_BITRATE) == TUTOR_VOICE.bitrate_kbps * 1024  # discord.py's kbit is 1024 bit
    assert encoder.get(CTL_GET_FORCE_CHANNELS) == OPUS_AUTO


def test_forced_mono_and_complexity_are_applied_when_asked():
    """The two ctls discord.py does not wrap: complexity and forced mono."""
    encoder = TutorVoiceEncoder(OpusSettings(complexity=2, mono=True))
    assert encoder.get(CTL_GET_COMPLEXITY) == 2 and encoder.get(CTL_GET_FORCE_CHANNELS) == 1
    packet = encoder.encode(tone(440, 48_000, 0.02, channels=2), 960)
    assert _packet_channels(packet) == 1


def test_discord_defaults_are_what_voice_client_play_would_use():
    """DISCORD_DEFAULTS is discord.py's Encoder() as VoiceClient.play() builds it."""
    ours, theirs = TutorVoiceEncoder(DISCORD_DEFAULTS), discord.opus.Encoder()
    for request in (CTL_GET_BITRATE, CTL_GET_SIGNAL, CTL_GET_COMPLEXITY, CTL_GET_FORCE_CHANNELS):
        value = ctypes.c_int32()
        discord.opus._lib.opus_encoder_ctl(theirs._state, request, ctypes.byref(value))
        assert ours.get(request) == value.value


@pytest.mark.parametrize("bad", [{"complexity": 11}, {"complexity": -1}, {"bitrate_kbps": 8}])
def test_out_of_range_settings_are_refused(bad):
    """Complexity outside 0–10 or a bitrate discord.py would clamp is a ValueError."""
    with pytest.raises(ValueError):
        OpusSettings(**bad)


def test_opus_voice_encodes_the_playback_frames_super_wideband():
    """OpusVoice turns the tutor's PCM into TUTOR_VOICE packets that decode back to the same tone."""
    playback = PlaybackSource()
    voice = OpusVoice(playback)
    assert voice.is_opus() and voice.encoder.settings == TUTOR_VOICE
    playback.feed(tone(440, 24_000, 0.5))
    playback.end_of_turn()
    packets = [voice.read() for _ in range(25)]
    assert all(0 < len(p) < DISCORD_FRAME_BYTES for p in packets)
    assert {_packet_bandwidth(p) for p in packets[2:]} == {discord.opus.band_ctl["superwide"]}
    decoder = discord.opus.Decoder()
    left = np.frombuffer(b"".join(decoder.decode(p, fec=False) for p in packets), "<i2")[0::2]
    assert abs(peak_frequency(left[4800:], 48_000) - 440) < 10


def test_opus_voice_ends_with_its_source_and_passes_cleanup_on():
    """b"" from the PCM source ends the player; discord.py's cleanup() reaches the PlaybackSource."""
    playback = PlaybackSource()
    voice = OpusVoice(playback)
    voice.cleanup()
    assert voice.read() == b""


def test_upsampled_speech_keeps_nothing_above_12khz_to_lose():
    """Why super-wideband is free: Gemini's 24 kHz audio, upsampled, has no energy above 12 kHz."""
    noise = np.random.default_rng(1).normal(0, 6000, 24_000).clip(-32768, 32767).astype("<i2").tobytes()
    upsampler = Upsampler()
    left = np.frombuffer(upsampler.process(noise) + upsampler.flush(), "<i2")[0::2].astype(float)
    spectrum = np.abs(np.fft.rfft(left * np.hanning(len(left)))) ** 2
    freqs = np.fft.rfftfreq(len(left), 1 / 48_000)
    above = spectrum[freqs > 12_500].sum() / spectrum[freqs < 11_500].sum()
    assert 10 * np.log10(above) < -60

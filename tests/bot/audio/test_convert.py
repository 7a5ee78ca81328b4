"""Streaming converters with real soxr, and a real Opus round trip through discord.py's codec."""

import discord.opus
import numpy as np
import pytest
import soxr

from bot.audio.convert import Downsampler, Upsampler
from bot.audio.formats import DISCORD_FRAME_BYTES, LIVE_INPUT_FRAME_BYTES, LIVE_OUTPUT
from tests.signals import level_at, peak_frequency, rms_db, samples, stream, tone

LIVE_OUTPUT_FRAME_BYTES = LIVE_OUTPUT.bytes_for_ms(20)  # 960
SETTLE_S = 0.05  # skip this much at each end: filter delay and the flushed tail's ramp
DITHER_LSB = 2  # soxr dithers int16 output, so two runs of the same input differ by a couple of LSB


def _lsb_apart(a: bytes, b: bytes) -> int:
    """Largest sample difference between two equally long s16le streams (a shifted stream is thousands)."""
    assert len(a) == len(b)
    return int(np.abs(samples(a) - samples(b)).max())


def _steady(values: np.ndarray, rate: int, seconds: float = 1.0) -> np.ndarray:
    """`seconds` of output after the filter has settled (a whole number of tone periods)."""
    start = round(SETTLE_S * rate)
    return values[start : start + round(seconds * rate)]


def test_downsampler_keeps_1khz_level():
    """A 1 kHz tone at -6 dBFS leaves the downsampler within 0.5 dB."""
    out = samples(stream(Downsampler(), tone(1000, 48_000, 1.2, 0.5, channels=2), DISCORD_FRAME_BYTES))
    assert abs(rms_db(_steady(out, 16_000)) - rms_db(samples(tone(1000, 16_000, 1.0, 0.5)))) < 0.5


def test_upsampler_keeps_1khz_level():
    """A 1 kHz tone at -6 dBFS leaves the upsampler within 0.5 dB on each channel."""
    out = samples(stream(Upsampler(), tone(1000, 24_000, 1.2, 0.5), LIVE_OUTPUT_FRAME_BYTES), channels=2)
    for channel in (0, 1):
        assert abs(rms_db(_steady(out[:, channel], 48_000)) - rms_db(samples(tone(1000, 48_000, 1.0, 0.5)))) < 0.5


def test_downsampler_rejects_12khz_alias():
    """12 kHz at 48 kHz would fold to 4 kHz at 16 kHz; it comes out at least 90 dB down."""
    source = tone(12_000, 48_000, 1.2, 0.9, channels=2)
    out = samples(stream(Downsampler(), source, DISCORD_FRAME_BYTES))
    input_level = level_at(samples(source, channels=2)[:48_000, 0], 48_000, 12_000)
    assert input_level - level_at(_steady(out, 16_000), 16_000, 4000) >= 90


def test_upsampler_rejects_images():
    """10 kHz at 24 kHz images at 14 kHz when upsampled; the image is at least 90 dB below the tone."""
    out = samples(stream(Upsampler(), tone(10_000, 24_000, 1.2, 0.9), LIVE_OUTPUT_FRAME_BYTES), channels=2)
    left = _steady(out[:, 0], 48_000)
    assert level_at(left, 48_000, 10_000) - level_at(left, 48_000, 14_000) >= 90


@pytest.mark.parametrize(
    ("make", "source", "chunk", "rates", "channels"),
    [
        (Downsampler, tone(440, 48_000, 1.0, 0.5, channels=2), DISCORD_FRAME_BYTES, (48_000, 16_000), 2),
        (Upsampler, tone(440, 24_000, 1.0, 0.5), LIVE_OUTPUT_FRAME_BYTES, (24_000, 48_000), 1),
    ],
)
def test_streaming_matches_one_shot(make, source, chunk, rates, channels):
    """20 ms streaming plus flush equals one-shot soxr over the whole signal (normalised RMS error < 1e-4)."""
    streamed = samples(stream(make(), source, chunk))
    mono = samples(source, channels)
    if channels == 2:
        mono = np.floor((mono[:, 0] + mono[:, 1]) / 2)
    reference = soxr.resample(mono.astype(np.int16), *rates, quality="HQ").astype(np.float64)
    if make is Upsampler:
        streamed = streamed.reshape(-1, 2)[:, 0]
    assert len(streamed) == len(reference)
    error = np.sqrt(np.mean(np.square(streamed - reference))) / np.sqrt(np.mean(np.square(reference)))
    assert error < 1e-4


def test_upsampler_channels_identical():
    """Both output channels carry the same samples."""
    out = samples(stream(Upsampler(), tone(700, 24_000, 0.3, 0.5), LIVE_OUTPUT_FRAME_BYTES), channels=2)
    assert len(out) > 0
    assert np.array_equal(out[:, 0], out[:, 1])


@pytest.mark.parametrize(("make", "good_chunk", "bad_chunk"), [(Downsampler, 3840, 3839), (Upsampler, 960, 961)])
def test_partial_sample_raises_and_leaves_stream_intact(make, good_chunk, bad_chunk):
    """A chunk with a partial sample raises ValueError and the stream continues as if it never came."""
    source = tone(440, 48_000 if make is Downsampler else 24_000, 0.2, 0.5, channels=2 if make is Downsampler else 1)
    chunks = [source[i : i + good_chunk] for i in range(0, len(source), good_chunk)]
    clean, disturbed = make(), make()
    expected = b"".join(clean.process(c) for c in chunks) + clean.flush()
    got = bytearray()
    for index, chunk in enumerate(chunks):
        if index == 3:
            with pytest.raises(ValueError, match="s16le"):
                disturbed.process(b"\x00" * bad_chunk)
        got += disturbed.process(chunk)
    got += disturbed.flush()
    assert _lsb_apart(bytes(got), expected) <= DITHER_LSB


def test_flush_returns_tail_and_restarts():
    """flush() hands over what the filter held: the total is exactly the input duration, and it starts over."""
    downsampler = Downsampler()
    source = tone(440, 48_000, 0.2, 0.5, channels=2)
    body = b"".join(downsampler.process(source[i : i + 3840]) for i in range(0, len(source), 3840))
    tail = downsampler.flush()
    assert len(tail) > 0
    assert len(body) + len(tail) == 10 * LIVE_INPUT_FRAME_BYTES
    assert _lsb_apart(stream(downsampler, source, 3840), body + tail) <= DITHER_LSB


def test_opus_round_trip_keeps_tone():
    """48 kHz stereo 1 kHz → discord.py Opus encode/decode → Downsampler: the peak is still at 1 kHz."""
    discord.opus._load_default()
    assert discord.opus.is_loaded(), "libopus is required for voice: install libopus0 (apt-get install libopus0)"
    encoder, decoder, downsampler = discord.opus.Encoder(), discord.opus.Decoder(), Downsampler()
    source = tone(1000, 48_000, 1.2, 0.5, channels=2)
    out = bytearray()
    for start in range(0, len(source), DISCORD_FRAME_BYTES):
        packet = encoder.encode(source[start : start + DISCORD_FRAME_BYTES], encoder.SAMPLES_PER_FRAME)
        decoded = decoder.decode(packet)
        assert len(decoded) == DISCORD_FRAME_BYTES
        out += downsampler.process(decoded)
    steady = _steady(samples(bytes(out)), 16_000)
    assert peak_frequency(steady, 16_000) == pytest.approx(1000, abs=2)
    assert abs(rms_db(steady) - rms_db(samples(tone(1000, 16_000, 1.0, 0.5)))) < 1.0

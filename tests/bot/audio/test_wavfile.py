"""bot.audio.wavfile: the WAV layouts editors write, decoded to the same samples; compressed ones refused in words."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile as scipy_wavfile

from bot.audio.wavfile import read_wav
from bot.live.check import read_wav_as_live_input

RATE = 22_050
TONE = (0.5 * np.sin(2 * math.pi * 440 * np.arange(RATE // 10) / RATE)).astype(np.float32)  # 100 ms


def riff(fmt: bytes, data: bytes, extra_chunks: bytes = b"") -> bytes:
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunks
    body += b"data" + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(tag: int, channels: int, bits: int, subformat: int | None = None) -> bytes:
    block = channels * bits // 8
    base = struct.pack("<HHIIHH", tag, channels, RATE, RATE * block, block, bits)
    if subformat is None:
        return base
    guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    return base + struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", subformat) + guid_tail


def int24(samples: np.ndarray) -> bytes:
    values = np.round(samples * (2 ** 23 - 1)).astype(np.int32)
    return b"".join(int(v).to_bytes(3, "little", signed=True) for v in values)


def test_plain_16_bit_matches_the_wave_module(tmp_path):
    """16-bit PCM written by Python's wave decodes to the tone within one step."""
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((TONE * 32767).astype("<i2").tobytes())
    audio = read_wav(path)
    assert (audio.sample_rate, audio.channels) == (RATE, 1)
    assert np.max(np.abs(audio.mono() - TONE)) < 1 / 16000


def test_24_bit_extensible_stereo(tmp_path):
    """WAVE_FORMAT_EXTENSIBLE 24-bit stereo (the `unknown format: 65534` case) decodes per channel."""
    stereo = np.stack([TONE, -TONE], axis=1).reshape(-1)
    path = tmp_path / "b.wav"
    path.write_bytes(riff(fmt_chunk(0xFFFE, 2, 24, subformat=1), int24(stereo)))
    audio = read_wav(path)
    assert audio.channels == 2
    assert np.max(np.abs(audio.samples[:, 0] - TONE)) < 1e-6
    assert np.max(np.abs(audio.samples[:, 1] + TONE)) < 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_wav_written_by_scipy(tmp_path, dtype):
    """IEEE float WAVs (scipy writes format 3) decode to the same samples."""
    path = tmp_path / "c.wav"
    scipy_wavfile.write(path, RATE, TONE.astype(dtype))
    assert np.max(np.abs(read_wav(path).mono() - TONE)) < 1e-6


def test_8_bit_and_an_odd_chunk_before_the_data(tmp_path):
    """8-bit unsigned PCM after a padded LIST chunk still decodes."""
    data = np.round(TONE * 127 + 128).astype(np.uint8).tobytes()
    path = tmp_path / "d.wav"
    path.write_bytes(riff(fmt_chunk(1, 1, 8), data, extra_chunks=b"LIST" + struct.pack("<I", 3) + b"abc\0"))
    assert np.max(np.abs(read_wav(path).mono() - TONE)) < 1 / 100


@pytest.mark.parametrize(("content", "words"), [
    (riff(fmt_chunk(7, 1, 8), b"\x7f" * 100), "is compressed (μ-law)"),
    (riff(fmt_chunk(0xFFFE, 1, 16, subformat=2), b"\0" * 100), "is compressed (ADPCM)"),
    (riff(fmt_chunk(1, 1, 12), b"\0" * 100), "uses 12-bit integer samples"),
    (b"ID3\x04 this is an mp3", "is not a WAV file"),
    (b"RIFF\x04\x00\x00\x00WAVE", "is damaged"),
])
def test_other_files_are_refused_in_words(tmp_path, content, words):
    """Compressed, odd or damaged files: one sentence saying what it is and how to convert it."""
    path = tmp_path / "kid.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError) as caught:
        read_wav(path)
    message = str(caught.value)
    assert words in message and "ffmpeg -i in.wav -c:a pcm_s16le out.wav" in message
    assert "65534" not in message and "Error" not in message


def test_missing_file_is_one_sentence(tmp_path):
    """A path that does not exist says so without an exception name."""
    with pytest.raises(ValueError, match=r"Cannot read .*missing.wav: No such file or directory\."):
        read_wav(tmp_path / "missing.wav")


def test_live_input_from_a_24_bit_file(tmp_path):
    """live-check's converter turns a 24-bit 22.05 kHz file into 100 ms of 16 kHz mono s16le."""
    path = tmp_path / "e.wav"
    path.write_bytes(riff(fmt_chunk(0xFFFE, 1, 24, subformat=1), int24(TONE)))
    pcm = read_wav_as_live_input(Path(path))
    assert len(pcm) == 2 * 1600
    assert np.max(np.abs(np.frombuffer(pcm, "<i2"))) > 0.4 * 32767

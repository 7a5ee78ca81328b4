"""Read the WAV files people actually have: 8/16/24/32-bit PCM and 32/64-bit float, plain or "extensible".

Python 3.11's `wave` reads only plain integer PCM and stops at `WAVE_FORMAT_EXTENSIBLE` (what most editors
write for 24-bit or more than two channels) with "unknown format: 65534". This reader walks the RIFF chunks
itself. Anything compressed (ADPCM, μ-law, MP3 inside a WAV) is refused with a sentence saying how to convert
it, never decoded wrongly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PCM, IEEE_FLOAT, EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
FORMAT_NAMES = {0x0002: "ADPCM", 0x0006: "A-law", 0x0007: "μ-law", 0x0011: "IMA ADPCM", 0x0055: "MP3"}
CONVERT_HINT = "save it as 16-bit PCM WAV (for example: ffmpeg -i in.wav -c:a pcm_s16le out.wav)"


@dataclass(frozen=True, slots=True)
class WavAudio:
    """Samples as float32 in [-1, 1], shaped (frames, channels), with their rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    def mono(self) -> np.ndarray:
        """All channels averaged into one."""
        return self.samples.mean(axis=1, dtype=np.float32)


def read_wav(path: Path) -> WavAudio:
    """Decode `path`; raises ValueError with one sentence a person can act on."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"Cannot read {path}: {exc.strerror or 'the file cannot be opened'}.") from None
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path} is not a WAV file; {CONVERT_HINT}.")
    fmt, payload = _chunks(data, path)
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # the first two bytes of the sub-format GUID
    if channels < 1 or rate < 1:
        raise ValueError(f"{path} says it has {channels} channels at {rate} Hz; {CONVERT_HINT}.")
    samples = _decode(payload, tag, bits, path)
    usable = len(samples) - len(samples) % channels
    return WavAudio(samples[:usable].reshape(-1, channels), rate)


def _chunks(data: bytes, path: Path) -> tuple[bytes, bytes]:
    """The `fmt ` and `data` chunks (a truncated last chunk keeps what is there, as players do)."""
    fmt = payload = None
    offset = 12
    while offset + 8 <= len(data):
        name, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = data[offset + 8:offset + 8 + size]
        if name == b"fmt ":
            fmt = body
        elif name == b"data":
            payload = body
        offset += 8 + size + (size & 1)  # chunks are padded to an even length
    if fmt is None or len(fmt) < 16 or payload is None:
        raise ValueError(f"{path} is damaged (no format or no sound data); {CONVERT_HINT}.")
    return fmt, payload


def _decode(payload: bytes, tag: int, bits: int, path: Path) -> np.ndarray:
    """Interleaved samples as float32 in [-1, 1]."""
    if tag == PCM and bits == 8:
        return (np.frombuffer(payload, np.uint8).astype(np.float32) - 128) / 128
    if tag == PCM and bits in (16, 32):
        raw = np.frombuffer(payload[:len(payload) - len(payload) % (bits // 8)], f"<i{bits // 8}")
        return (raw / float(2 ** (bits - 1))).astype(np.float32)
    if tag == PCM and bits == 24:
        usable = len(payload) - len(payload) % 3
        triples = np.frombuffer(payload[:usable], np.uint8).reshape(-1, 3).astype(np.int32)
        value = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return (value / float(1 << 23)).astype(np.float32)
    if tag == IEEE_FLOAT and bits in (32, 64):
        raw = np.frombuffer(payload[:len(payload) - len(payload) % (bits // 8)], f"<f{bits // 8}")
        return np.clip(np.nan_to_num(raw), -1.0, 1.0).astype(np.float32)
    if tag in (PCM, IEEE_FLOAT):
        kind = "integer" if tag == PCM else "floating-point"
        raise ValueError(f"{path} uses {bits}-bit {kind} samples, which this reader does not know; "
                         f"{CONVERT_HINT}.")
    name = FORMAT_NAMES.get(tag, f"format {tag}")
    raise ValueError(f"{path} is compressed ({name}); {CONVERT_HINT}.")

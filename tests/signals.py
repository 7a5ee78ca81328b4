"""Test tones and level measurements shared by the audio tests and bench/audio.py.

Levels are in dBFS (0 dB = a full-scale int16 sine's peak of 32768). Tones are generated at
frequencies that land on FFT bins, so a Hann window leaks only into the two neighbouring bins.
"""

from __future__ import annotations

import numpy as np

FULL_SCALE = 32768.0


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5, channels: int = 1) -> bytes:
    """A sine as s16le bytes; stereo channels are identical and interleaved."""
    t = np.arange(round(rate * seconds)) / rate
    mono = np.round(np.sin(2 * np.pi * freq * t) * amplitude * FULL_SCALE).astype("<i2")
    return np.repeat(mono, channels).tobytes() if channels > 1 else mono.tobytes()


def samples(pcm: bytes, channels: int = 1) -> np.ndarray:
    """s16le bytes as float64, shape (n,) for mono or (n, channels)."""
    values = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return values if channels == 1 else values.reshape(-1, channels)


def rms_db(values: np.ndarray) -> float:
    """RMS level of a sine-like signal in dBFS (a full-scale sine reads 0 dB)."""
    rms = np.sqrt(np.mean(np.square(values)))
    return 20 * np.log10(max(rms * np.sqrt(2), 1e-9) / FULL_SCALE)


def level_at(values: np.ndarray, rate: int, freq: float) -> float:
    """Level of the component at `freq` in dBFS, from a Hann-windowed FFT over the whole array."""
    window = np.hanning(len(values))
    spectrum = np.abs(np.fft.rfft(values * window)) * 2 / window.sum()
    centre = round(freq * len(values) / rate)
    peak = spectrum[max(centre - 2, 0) : centre + 3].max()
    return 20 * np.log10(max(peak, 1e-9) / FULL_SCALE)


def peak_frequency(values: np.ndarray, rate: int) -> float:
    """Frequency of the strongest FFT bin (Hann window), in Hz."""
    spectrum = np.abs(np.fft.rfft(values * np.hanning(len(values))))
    return float(np.argmax(spectrum) * rate / len(values))


def stream(convert: object, pcm: bytes, chunk_bytes: int) -> bytes:
    """Feed `pcm` through a converter's process() in fixed chunks, then flush: the streaming output."""
    out = bytearray()
    for start in range(0, len(pcm), chunk_bytes):
        out += convert.process(pcm[start : start + chunk_bytes])
    out += convert.flush()
    return bytes(out)

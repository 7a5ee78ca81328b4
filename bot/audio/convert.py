"""Streaming sample-rate converters: one object per user per direction, kept for its lifetime.

soxr's `ResampleStream` carries the filter state from one 20 ms chunk to the next; re-creating a
resampler per frame (or using one-shot resampling per frame) is what makes clicks at frame edges.
"""

from __future__ import annotations

import numpy as np
import soxr

from bot.audio.formats import DISCORD, LIVE_INPUT, LIVE_OUTPUT, PcmFormat

DEFAULT_QUALITY = "HQ"  # alias rejection beyond 100 dB at about 20 ms of added delay
# Kid input: LQ still rejects the 12 kHz alias by ~120 dB, holds ~11 ms instead of ~21 ms (max 20 vs 37 ms)
# and emits every 20 ms chunk instead of a 30 ms burst every other one, so the mixer waits less.
INPUT_QUALITY = "LQ"


class _StreamConverter:
    """Shared shape of both directions: validate, convert channels, resample through one stream."""

    source: PcmFormat
    target: PcmFormat

    def __init__(self, quality: str = DEFAULT_QUALITY) -> None:
        self._stream = soxr.ResampleStream(
            self.source.sample_rate, self.target.sample_rate, 1, dtype="int16", quality=quality
        )

    def process(self, pcm: bytes) -> bytes:
        """Convert the next chunk of the stream; output length follows the rate ratio over time."""
        samples = self._to_mono(self._validate(pcm))
        return self._from_mono(self._stream.resample_chunk(samples))

    def flush(self) -> bytes:
        """Return what the filter still holds and reset, so the stream can start over cleanly."""
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._stream.clear()
        return self._from_mono(tail)

    def reset(self) -> None:
        """Drop the filter's history without output (barge-in: the old audio is unwanted)."""
        self._stream.clear()

    def _validate(self, pcm: bytes) -> np.ndarray:
        frame = self.source.bytes_per_frame
        if len(pcm) % frame:
            raise ValueError(
                f"{type(self).__name__} expects whole {self.source.channels}-channel s16le frames "
                f"({frame} bytes each); got {len(pcm)} bytes"
            )
        return np.frombuffer(pcm, dtype="<i2")

    def _to_mono(self, samples: np.ndarray) -> np.ndarray:
        return samples

    def _from_mono(self, mono: np.ndarray) -> bytes:
        return mono.astype("<i2", copy=False).tobytes()


class Downsampler(_StreamConverter):
    """Discord's 48 kHz stereo → Gemini Live's 16 kHz mono (downmix first: a third of the work)."""

    source = DISCORD
    target = LIVE_INPUT

    def __init__(self, quality: str = INPUT_QUALITY) -> None:
        super().__init__(quality)

    def _to_mono(self, samples: np.ndarray) -> np.ndarray:
        pairs = samples.reshape(-1, 2).astype(np.int32)
        return ((pairs[:, 0] + pairs[:, 1]) >> 1).astype(np.int16)


class Upsampler(_StreamConverter):
    """Gemini Live's 24 kHz mono → Discord's 48 kHz stereo (resample mono, then duplicate)."""

    source = LIVE_OUTPUT
    target = DISCORD

    def _from_mono(self, mono: np.ndarray) -> bytes:
        return np.repeat(mono.astype("<i2", copy=False), 2).tobytes()

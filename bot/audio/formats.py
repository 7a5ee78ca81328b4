"""The three PCM formats on the audio path; every size and rate is derived from here.

All PCM is signed 16-bit little-endian ("s16le"); stereo is interleaved L R L R.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PcmFormat:
    """A PCM layout: rate and channel count, with the byte sizes that follow from them."""

    sample_rate: int
    channels: int
    sample_width: int = 2

    @property
    def bytes_per_frame(self) -> int:
        """Bytes for one sample instant across all channels."""
        return self.channels * self.sample_width

    def bytes_for_ms(self, ms: float) -> int:
        """Byte count of `ms` milliseconds, aligned to whole sample frames."""
        return int(self.sample_rate * ms / 1000) * self.bytes_per_frame

    def ms_for_bytes(self, nbytes: int) -> float:
        """Duration of `nbytes` of audio in milliseconds."""
        return nbytes / self.bytes_per_frame / self.sample_rate * 1000


DISCORD = PcmFormat(48_000, 2)   # what voice-recv decodes to and discord.py's player wants
LIVE_INPUT = PcmFormat(16_000, 1)   # what Gemini Live hears: audio/pcm;rate=16000
LIVE_OUTPUT = PcmFormat(24_000, 1)  # what Gemini Live speaks

FRAME_MS = 20
DISCORD_FRAME_BYTES = DISCORD.bytes_for_ms(FRAME_MS)  # 3840
LIVE_INPUT_FRAME_BYTES = LIVE_INPUT.bytes_for_ms(FRAME_MS)  # 640
LIVE_INPUT_MIME = f"audio/pcm;rate={LIVE_INPUT.sample_rate}"

"""The tutor's voice as Opus: how it is encoded, in one place.

What Discord gets from us is Gemini's 24 kHz mono speech, upsampled to 48 kHz stereo only because
that is the PCM discord.py's player wants. discord.py's encoder defaults (128 kbit/s, full band, stereo,
libopus's complexity 9, signal "auto") are for music; for this source they cost 2–3 % of a core per speaking
guild and buy nothing audible. `TUTOR_VOICE` is chosen from `scripts/bench encoder`, which prints cost
and a log-spectral distance to the original for every setting tried (see the README's Performance
section and that bench's docstring for the numbers and the reasoning).

`OpusVoice` is the stage that applies it: an `AudioSource` that reads 20 ms PCM frames from the
playback source and returns Opus packets, so discord.py's player sends them as they are
(`is_opus()` → no encode of its own) — DAVE encryption and the transport still happen in discord.py.
That keeps the encoder ours, configured before the first frame, on the player thread that uses it
(a ctl call from another thread while the player encodes would race inside libopus).

`TutorVoiceEncoder` is discord.py's `Encoder` plus the two ctls it does not wrap (complexity, forced
mono). Like discord.py's own setters it calls `discord.opus._lib.opus_encoder_ctl` on the encoder's
`_state`; `encoder_shim_problems()` checks those internals are still there (tested).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Literal

import discord
import discord.opus

# libopus opus_defines.h request numbers discord.py does not name
CTL_GET_BITRATE = 4003
CTL_GET_BANDWIDTH = 4009
CTL_SET_COMPLEXITY = 4010
CTL_GET_COMPLEXITY = 4011
CTL_SET_FORCE_CHANNELS = 4022
CTL_GET_FORCE_CHANNELS = 4023
CTL_GET_SIGNAL = 4025
CTL_GET_LOOKAHEAD = 4027
OPUS_AUTO = -1000

Bandwidth = Literal["narrow", "medium", "wide", "superwide", "full"]
Signal = Literal["auto", "voice", "music"]


@dataclass(frozen=True, slots=True)
class OpusSettings:
    """Encoder settings for one voice stream (names as discord.py's `VoiceClient.play` takes them)."""

    bitrate_kbps: int = 128
    complexity: int | None = None  # None: libopus's default (9 in libopus 1.3+; discord.py never sets it)
    signal_type: Signal = "auto"
    bandwidth: Bandwidth = "full"
    mono: bool = False  # OPUS_SET_FORCE_CHANNELS(1): mono packets; Discord's stereo decoders play them on both ears
    application: Literal["audio", "voip", "lowdelay"] = "audio"
    fec: bool = True
    expected_packet_loss: float = 0.15

    def __post_init__(self) -> None:
        if self.complexity is not None and not 0 <= self.complexity <= 10:
            raise ValueError(f"Opus complexity is 0–10, not {self.complexity}")
        if not 16 <= self.bitrate_kbps <= 512:
            raise ValueError(f"discord.py's encoder takes 16–512 kbit/s, not {self.bitrate_kbps}")

    def label(self) -> str:
        """Short description for tables and logs."""
        channels = "mono" if self.mono else "stereo"
        complexity = "c(9)" if self.complexity is None else f"c{self.complexity}"
        return (f"{self.bitrate_kbps} kbit/s {self.bandwidth} {self.signal_type} {complexity} {channels}"
                f" {self.application}")


DISCORD_DEFAULTS = OpusSettings()  # what `VoiceClient.play()` would use: music settings
# Chosen with `scripts/bench encoder` (numbers in the README's Performance section), on real speech through
# the bot's own upsampler. Complexity 5 is the knee: 0.53–0.57× the defaults' time and instructions for
# +0.1 dB log-spectral / +0.6 dB mel-cepstral distance (complexity 3: +2.4 dB MCD; 6 and up buy ≤ 0.6 dB
# for up to 1.8× the cost; the default, 9, codes exactly as 8 and 10 do). Super-wideband: Gemini's
# 24 kHz audio has nothing above 12 kHz to lose (it scores slightly better than full band, 2 % cheaper).
# The bitrate stays at 128 kbit/s: it hardly changes the cost (≤ 3 %) and every step down scores worse
# (96: +1.4 dB MCD). Forced mono saves only 5–7 % and scores worse at the same bitrate, so stereo stays.
# "voice" changes nothing measurable at this bitrate (the encoder stays in CELT mode); it is what the
# signal is.
TUTOR_VOICE = OpusSettings(bitrate_kbps=128, complexity=5, signal_type="voice", bandwidth="superwide")


class TutorVoiceEncoder(discord.opus.Encoder):
    """discord.py's Opus encoder with every setting of an `OpusSettings` applied."""

    def __init__(self, settings: OpusSettings = TUTOR_VOICE) -> None:
        super().__init__(application=settings.application, bitrate=settings.bitrate_kbps, fec=settings.fec,
                         expected_packet_loss=settings.expected_packet_loss, bandwidth=settings.bandwidth,
                         signal_type=settings.signal_type)
        self.settings = settings
        if settings.complexity is not None:
            self._ctl(CTL_SET_COMPLEXITY, settings.complexity)
        if settings.mono:
            self._ctl(CTL_SET_FORCE_CHANNELS, 1)

    def _ctl(self, request: int, value: int) -> None:
        discord.opus._lib.opus_encoder_ctl(self._state, request, value)

    def get(self, request: int) -> int:
        """Read one value back from libopus (an `OPUS_GET_*` request number)."""
        out = ctypes.c_int32()
        discord.opus._lib.opus_encoder_ctl(self._state, request, ctypes.byref(out))
        return out.value


class OpusVoice(discord.AudioSource):
    """Encodes a PCM source's 20 ms 48 kHz stereo frames as Opus for discord.py's player thread."""

    def __init__(self, pcm: discord.AudioSource, settings: OpusSettings = TUTOR_VOICE) -> None:
        self.pcm = pcm
        self.encoder = TutorVoiceEncoder(settings)

    def read(self) -> bytes:
        """The next Opus packet, or b"" when the PCM source has ended (which ends the player)."""
        frame = self.pcm.read()
        if not frame:
            return b""
        return self.encoder.encode(frame, self.encoder.SAMPLES_PER_FRAME)

    def is_opus(self) -> bool:
        """discord.py sends our packets as they are (it still DAVE-encrypts them)."""
        return True

    def cleanup(self) -> None:
        """discord.py calls this when its player stops; the PCM source hears about it."""
        self.pcm.cleanup()


def encoder_shim_problems() -> list[str]:
    """What is missing of the discord.py internals `TutorVoiceEncoder` uses (empty = compatible)."""
    problems = []
    if not discord.opus.is_loaded():
        discord.opus._load_default()
    if not hasattr(discord.opus, "_lib") or not hasattr(discord.opus._lib, "opus_encoder_ctl"):
        problems.append("discord.opus._lib.opus_encoder_ctl is gone")
        return problems
    encoder = discord.opus.Encoder()
    if not hasattr(encoder, "_state"):
        problems.append("discord.opus.Encoder no longer keeps its libopus state in _state")
    return problems

"""Opus settings for the tutor's voice: cost per 20 ms frame and quality against the original, side by side.

Run: `python -m bench.encoder` (or `scripts/bench encoder`); `--instructions` adds libopus instruction
counts under valgrind's callgrind (load-independent; needs `valgrind`), `--seconds` the speech length.

Source: what the bot really encodes — real speech (espeak-ng, when installed: `apt-get install espeak-ng`;
otherwise a speech-like signal from harmonics and noise at a syllable rhythm), resampled to Gemini's
24 kHz mono and upsampled by the bot's own `Upsampler` to 48 kHz stereo, cut in 20 ms frames.

Cost: each setting encodes every frame with a fresh `TutorVoiceEncoder`; settings take turns in each
round (so a busy moment of the shared machine hits them alike), and the lowest per-round median is kept.

Quality: the packets are decoded by a fresh discord.py `Decoder`, aligned to the original (the codec's
delay, found by cross-correlation) and compared over the speech frames (frames within 50 dB of the
loudest) with two objective scores, both 0 for a perfect copy:
* LSD — log-spectral distance, dB: per 20 ms Hann frame, the RMS over 0–12 kHz of the difference of the
  two power spectra in dB (floored 80 dB below the loudest frame's peak), averaged over frames;
* MCD — mel-cepstral distortion, dB: 13 cepstra of 40 mel bands over 0–12 kHz, the usual
  (10/ln 10)·sqrt(2·Σ Δc²) over c1…c12, averaged over frames.
12 kHz is where Gemini's 24 kHz audio ends: nothing above it exists to be lost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, replace
from pathlib import Path

import discord.opus
import numpy as np
import soxr

from bot.audio.convert import Upsampler
from bot.audio.formats import DISCORD_FRAME_BYTES, FRAME_MS, LIVE_OUTPUT
from bot.audio.voice_encoder import DISCORD_DEFAULTS, TUTOR_VOICE, OpusSettings, TutorVoiceEncoder

RATE = 48_000
FRAME_SAMPLES = RATE * FRAME_MS // 1000
ROUNDS = 5
BAND_TOP_HZ = 12_000
SENTENCES = (
    "Why is the sky blue? Sunlight is made of every colour, and the air scatters the blue light the most.",
    "Let's count the planets together: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune!",
    "Great question, Ana. A volcano is a mountain with melted rock inside, and sometimes it comes out.",
)

SETTINGS: list[OpusSettings] = [
    DISCORD_DEFAULTS,
    # one knob at a time
    *(replace(DISCORD_DEFAULTS, complexity=c) for c in (10, 8, 6, 5, 4, 3, 0)),
    replace(DISCORD_DEFAULTS, signal_type="voice"),
    replace(DISCORD_DEFAULTS, bandwidth="superwide"),
    replace(DISCORD_DEFAULTS, bandwidth="wide"),
    replace(DISCORD_DEFAULTS, mono=True),
    replace(DISCORD_DEFAULTS, application="voip"),
    *(replace(DISCORD_DEFAULTS, bitrate_kbps=b) for b in (96, 64, 48)),
    # together
    *(OpusSettings(b, 5, "voice", "superwide", mono=m) for b in (128, 96, 64) for m in (False, True)),
    OpusSettings(48, 5, "voice", "superwide", mono=True),
    OpusSettings(32, 5, "voice", "superwide", mono=True),
    OpusSettings(24, 5, "voice", "wide", mono=True),
]


# ----- the source -------------------------------------------------------------------------------------


def espeak_speech(seconds: float) -> tuple[np.ndarray, str] | None:
    """Real speech from espeak-ng at 24 kHz mono int16, or None when espeak-ng is not installed."""
    if shutil.which("espeak-ng") is None:
        return None
    pieces, total = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, voice in enumerate(("en-us", "en-gb+f3", "en-us+m3") * 10):
            path = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), SENTENCES[i % len(SENTENCES)]],
                           check=True, capture_output=True)
            with wave.open(str(path)) as wav:
                rate = wav.getframerate()
                pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
            pieces.append(soxr.resample(pcm, rate, LIVE_OUTPUT.sample_rate, quality="HQ"))
            total += len(pieces[-1])
            if total >= seconds * LIVE_OUTPUT.sample_rate:
                break
    speech = np.concatenate(pieces)[: round(seconds * LIVE_OUTPUT.sample_rate)]
    return speech.astype("<i2"), "espeak-ng speech"


def speech_like(seconds: float) -> np.ndarray:
    """Harmonics with a wandering pitch at a syllable rhythm, plus breath noise (24 kHz mono int16)."""
    rng = np.random.default_rng(7)
    rate = LIVE_OUTPUT.sample_rate
    t = np.arange(round(rate * seconds)) / rate
    pitch = 180 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 40) if k * 220 < rate / 2)
    envelope = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 0.5
    signal = voice * envelope * 6000 + rng.normal(0, 300, t.size) * (0.3 + envelope)
    return np.clip(signal, -32768, 32767).astype("<i2")


def source_frames(seconds: float) -> tuple[list[bytes], np.ndarray, str]:
    """The 48 kHz stereo frames the player would encode, their left channel as float, and what they are."""
    found = espeak_speech(seconds)
    speech, name = found if found is not None else (speech_like(seconds), "speech-like signal (no espeak-ng)")
    upsampler = Upsampler()
    pcm48 = upsampler.process(speech.tobytes()) + upsampler.flush()
    usable = len(pcm48) // DISCORD_FRAME_BYTES * DISCORD_FRAME_BYTES
    frames = [pcm48[i:i + DISCORD_FRAME_BYTES] for i in range(0, usable, DISCORD_FRAME_BYTES)]
    left = np.frombuffer(pcm48[:usable], "<i2")[0::2].astype(np.float64)
    return frames, left, name


# ----- cost and quality -------------------------------------------------------------------------------


@dataclass
class Row:
    settings: OpusSettings
    us_per_frame: float = 0.0
    kbps: float = 0.0
    lsd_db: float = 0.0
    mcd_db: float = 0.0
    instructions: float | None = None


def encode_all(settings: OpusSettings, frames: list[bytes]) -> tuple[list[bytes], float]:
    """Every frame through a fresh encoder: the packets and the median ns per encode call."""
    encoder = TutorVoiceEncoder(settings)
    packets, timings = [], []
    for frame in frames:
        start = time.perf_counter_ns()
        packets.append(encoder.encode(frame, FRAME_SAMPLES))
        timings.append(time.perf_counter_ns() - start)
    return packets, statistics.median(timings)


def decode_left(packets: list[bytes]) -> np.ndarray:
    decoder = discord.opus.Decoder()
    pcm = b"".join(decoder.decode(p, fec=False) for p in packets)
    return np.frombuffer(pcm, "<i2")[0::2].astype(np.float64)


def align(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Shift `decoded` back by the codec delay (the lag of best correlation) and trim both to one length."""
    span = min(len(reference), RATE * 4)
    corr = [float(np.dot(reference[:span - max_lag], decoded[lag:lag + span - max_lag])) for lag in range(max_lag)]
    lag = int(np.argmax(corr))
    n = min(len(reference), len(decoded) - lag)
    return reference[:n], decoded[lag:lag + n]


def _frames(x: np.ndarray, size: int = FRAME_SAMPLES) -> np.ndarray:
    count = len(x) // size
    return x[: count * size].reshape(count, size) * np.hanning(size)


def _mel_filterbank(bands: int, size: int, top_hz: float) -> np.ndarray:
    mel = lambda hz: 2595 * np.log10(1 + hz / 700)  # noqa: E731
    edges_hz = 700 * (10 ** (np.linspace(mel(60), mel(top_hz), bands + 2) / 2595) - 1)
    bins = np.fft.rfftfreq(size, 1 / RATE)
    bank = np.zeros((bands, len(bins)))
    for b in range(bands):
        lo, mid, hi = edges_hz[b:b + 3]
        bank[b] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return bank


def quality(reference: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """(LSD dB, MCD dB) over the speech frames, band-limited to 0–12 kHz (see the module docstring)."""
    ref_power = np.abs(np.fft.rfft(_frames(reference))) ** 2
    dec_power = np.abs(np.fft.rfft(_frames(decoded))) ** 2
    band = np.fft.rfftfreq(FRAME_SAMPLES, 1 / RATE) <= BAND_TOP_HZ
    energy = ref_power[:, band].sum(axis=1)
    speech = energy > energy.max() * 1e-5  # within 50 dB of the loudest frame
    floor = ref_power[:, band].max() * 1e-8
    ref_db = 10 * np.log10(ref_power[speech][:, band] + floor)
    dec_db = 10 * np.log10(dec_power[speech][:, band] + floor)
    lsd = float(np.mean(np.sqrt(np.mean((ref_db - dec_db) ** 2, axis=1))))
    bank = _mel_filterbank(40, FRAME_SAMPLES, BAND_TOP_HZ)
    k = np.arange(40)
    dct = np.sqrt(2 / 40) * np.cos(np.pi / 40 * (k[None, :] + 0.5) * np.arange(13)[:, None])  # orthonormal DCT-II
    mel_floor = (ref_power[speech] @ bank.T).max() * 1e-8
    ref_c = 0.5 * np.log(ref_power[speech] @ bank.T + mel_floor) @ dct.T  # cepstra of the log amplitude
    dec_c = 0.5 * np.log(dec_power[speech] @ bank.T + mel_floor) @ dct.T
    diff = (ref_c - dec_c)[:, 1:13]
    mcd = float(np.mean(10 / np.log(10) * np.sqrt(2 * np.sum(diff**2, axis=1))))
    return lsd, mcd


def measure(frames: list[bytes], reference: np.ndarray, rounds: int) -> list[Row]:
    rows = [Row(s) for s in SETTINGS]
    best = {id(r): float("inf") for r in rows}
    for _ in range(rounds):
        for row in rows:
            packets, median_ns = encode_all(row.settings, frames)
            best[id(row)] = min(best[id(row)], median_ns)
    for row in rows:
        packets, _ = encode_all(row.settings, frames)
        row.us_per_frame = best[id(row)] / 1000
        row.kbps = sum(len(p) for p in packets) * 8 / (len(packets) * FRAME_MS)
        row.lsd_db, row.mcd_db = quality(*align(reference, decode_left(packets)))
    return rows


# ----- instruction counts (callgrind) -----------------------------------------------------------------


def count_instructions(rows: list[Row], seconds: float) -> None:
    """libopus instructions per frame for every row, from one run under callgrind (load-independent).

    The child calls `os.getppid()` (libc `getppid`, which nothing else here calls) before each setting;
    callgrind dumps its counters at each call, so dump k+2 holds setting k's encodes. Only instructions
    inside libopus.so are summed (the encoder's own work, not Python's).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-before=getppid",
                        sys.executable, "-m", "bench.encoder", "--encode-only", "--seconds", str(seconds)],
                       check=True, capture_output=True)
        frames = len(source_frames(seconds)[0])
        for k, row in enumerate(rows):
            annotated = subprocess.run(["callgrind_annotate", "--threshold=100", f"{out}.{k + 2}"],
                                       check=True, capture_output=True, text=True).stdout
            total = sum(int(line.split()[0].replace(",", "")) for line in annotated.splitlines()
                        if "libopus" in line and line.strip()[:1].isdigit())
            row.instructions = total / frames


def encode_only(seconds: float) -> None:
    """The child of `count_instructions`: every setting's encodes, each after a `getppid` marker."""
    frames, _, _ = source_frames(seconds)
    for settings in SETTINGS:
        os.getppid()
        encode_all(settings, frames)
    os.getppid()


# ----- report -----------------------------------------------------------------------------------------


def print_table(rows: list[Row], name: str, seconds: float) -> None:
    base = rows[0]
    print(f"Opus encode of the tutor's voice: {name}, {seconds:g} s, 24 kHz mono → bot Upsampler → 48 kHz stereo;"
          f" {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; lowest of {ROUNDS} round medians\n")
    header = f"{'settings':<42} {'µs/frame':>8} {'× dflt':>6} {'% core':>6} {'kbit/s':>6} {'LSD dB':>6} {'MCD dB':>6}"
    if any(r.instructions is not None for r in rows):
        header += f" {'kinstr/frame':>12}"
    print(header)
    for row in rows:
        mark = "  ← TUTOR_VOICE" if row.settings == TUTOR_VOICE else ("  (discord.py default)" if row is base else "")
        line = (f"{row.settings.label():<42} {row.us_per_frame:>8.0f} {row.us_per_frame / base.us_per_frame:>6.2f}"
                f" {row.us_per_frame / (FRAME_MS * 10):>6.2f} {row.kbps:>6.1f} {row.lsd_db:>6.2f} {row.mcd_db:>6.2f}")
        if row.instructions is not None:
            line += f" {row.instructions / 1000:>12.0f}"
        print(line + mark)
    print("\n(LSD: log-spectral distance 0–12 kHz, MCD: mel-cepstral distortion c1–c12; both vs the 48 kHz original"
          " over speech frames, lower is closer; % core = µs per 20 ms frame / 200)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="speech length (default 20)")
    parser.add_argument("--instructions", action="store_true", help="add callgrind instruction counts")
    parser.add_argument("--encode-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    discord.opus._load_default()
    if args.encode_only:
        encode_only(args.seconds)
        return
    frames, reference, name = source_frames(args.seconds)
    rows = measure(frames, reference, ROUNDS)
    if args.instructions:
        count_instructions(rows, min(args.seconds, 2.0))
    print_table(rows, name, args.seconds)


if __name__ == "__main__":
    main()

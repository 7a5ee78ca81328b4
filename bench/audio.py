"""Per-20 ms-frame cost and quality of every audio stage, beside the naive ways other bots do it.

Run: `python -m bench.audio` (or `scripts/bench audio`). Goals: the whole receive path per active
speaker ≤ 1 % of one core, and soxr streaming ≥ 5× cheaper than per-frame scipy `resample_poly`.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import discord.opus
import numpy as np
from scipy.signal import resample_poly

from bot.audio.convert import Downsampler, Upsampler
from bot.audio.formats import DISCORD_FRAME_BYTES, FRAME_MS, LIVE_INPUT_FRAME_BYTES, LIVE_OUTPUT
from bot.audio.mixer import Mixer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.signals import level_at, samples, tone

FRAMES = 1500  # timed calls per stage
ROUNDS = 3  # the lowest of the rounds' medians is reported: other processes only ever add time
DISCORD_BITRATE_KBPS = 64  # a voice channel's default bitrate: what kids' clients send us
FRAME_US = FRAME_MS * 1000
LIVE_OUTPUT_FRAME_BYTES = LIVE_OUTPUT.bytes_for_ms(FRAME_MS)


@dataclass(frozen=True)
class Cost:
    """Median microseconds per 20 ms frame."""

    median_us: float

    @property
    def core_percent(self) -> float:
        return self.median_us / FRAME_US * 100


def time_per_frame(step: Callable[[int], object], frames: int = FRAMES) -> Cost:
    """Median call time of step(i), from the least disturbed of ROUNDS rounds (the machine is shared)."""
    for i in range(50):
        step(i)
    medians = []
    for _ in range(ROUNDS):
        timings = []
        for i in range(frames // ROUNDS):
            start = time.perf_counter_ns()
            step(i)
            timings.append(time.perf_counter_ns() - start)
        medians.append(statistics.median(timings))
    return Cost(min(medians) / 1000)


def frames_of(pcm: bytes, size: int) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


def downmix(frame: bytes) -> np.ndarray:
    pairs = np.frombuffer(frame, dtype="<i2").reshape(-1, 2).astype(np.int32)
    return ((pairs[:, 0] + pairs[:, 1]) >> 1).astype(np.int16)


def naive_resample_poly(frame: bytes) -> bytes:
    """What a bot does without stream state: scipy one-shot on each 20 ms frame on its own."""
    return np.clip(np.round(resample_poly(downmix(frame), 1, 3)), -32768, 32767).astype("<i2").tobytes()


def naive_decimate(frame: bytes) -> bytes:
    """Keep every third sample: no low-pass at all."""
    return downmix(frame)[::3].tobytes()


def soxr_stream(converter: Downsampler) -> Callable[[bytes], bytes]:
    return converter.process


def alias_rejection_db(convert: Callable[[bytes], bytes], tail: Callable[[], bytes] = bytes) -> float:
    """12 kHz at 48 kHz in (folds to 4 kHz at 16 kHz): how far below the input the 4 kHz output is."""
    source = tone(12_000, 48_000, 1.2, 0.9, channels=2)
    out = samples(b"".join(convert(f) for f in frames_of(source, DISCORD_FRAME_BYTES)) + tail())
    steady = out[800 : 800 + 16_000]
    return level_at(samples(source, 2)[:48_000, 0], 48_000, 12_000) - level_at(steady, 16_000, 4000)


def alias_note(method: str, rejection: dict[str, float]) -> str:
    """Where the 12 kHz tone's alias lands relative to the input tone (0 dB: not filtered at all)."""
    return f"alias at {-round(rejection[method])} dB"


def speech_like(rate: int, seconds: float, channels: int) -> bytes:
    """Harmonics plus noise at a talking level (peaks near -12 dBFS): closer to a voice than a tone."""
    rng = np.random.default_rng(1)
    t = np.arange(round(rate * seconds)) / rate
    voice = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 12)) * 5000 + rng.normal(0, 500, t.size)
    mono = np.clip(voice, -32768, 32767).astype("<i2")
    return np.repeat(mono, channels).tobytes() if channels > 1 else mono.tobytes()


def bench_mixer(speakers: int) -> Cost:
    """One pump tick: every speaker pushes 20 ms (each a different stretch of speech), then one pull."""
    mixer = Mixer()
    speech = frames_of(speech_like(16_000, 1.0, 1), LIVE_INPUT_FRAME_BYTES)

    def tick(i: int) -> None:
        now = i * 0.02
        for user_id in range(speakers):
            mixer.push(user_id, speech[(i + 7 * user_id) % len(speech)], now)
        mixer.pull(now)

    return time_per_frame(tick)


def main() -> None:
    discord.opus._load_default()
    if not discord.opus.is_loaded():
        raise SystemExit("libopus is not loadable: install libopus0 (apt-get install libopus0)")

    discord_frames = frames_of(speech_like(48_000, 2.0, 2), DISCORD_FRAME_BYTES)
    live_frames = frames_of(speech_like(24_000, 2.0, 1), LIVE_OUTPUT_FRAME_BYTES)
    encoder, decoder = discord.opus.Encoder(), discord.opus.Decoder()
    encoder.set_bitrate(DISCORD_BITRATE_KBPS)
    packets = [encoder.encode(f, encoder.SAMPLES_PER_FRAME) for f in discord_frames]
    cycle = len(discord_frames)

    downsampler, upsampler = Downsampler(), Upsampler()
    opus = time_per_frame(lambda i: decoder.decode(packets[i % cycle]))
    down = time_per_frame(lambda i: downsampler.process(discord_frames[i % cycle]))
    up = time_per_frame(lambda i: upsampler.process(live_frames[i % len(live_frames)]))
    poly = time_per_frame(lambda i: naive_resample_poly(discord_frames[i % cycle]))
    poly_up = time_per_frame(lambda i: resample_poly(np.frombuffer(live_frames[i % len(live_frames)], "<i2"), 2, 1))
    decimate = time_per_frame(lambda i: naive_decimate(discord_frames[i % cycle]))
    mixers = {n: bench_mixer(n) for n in (1, 4, 16)}

    fresh = Downsampler()
    rejection = {
        "soxr stream (ours)": alias_rejection_db(fresh.process, fresh.flush),
        "resample_poly per frame": alias_rejection_db(naive_resample_poly),
        "x[::3] decimation": alias_rejection_db(naive_decimate),
    }

    rows = [
        ("Opus decode (discord.opus.Decoder)", opus, f"{DISCORD_BITRATE_KBPS} kbit/s stereo packets"),
        ("Downsampler 48k st → 16k mono (soxr)", down, alias_note("soxr stream (ours)", rejection)),
        ("  naive: resample_poly per frame", poly,
         f"{poly.median_us / down.median_us:.1f}× ours, " + alias_note("resample_poly per frame", rejection)),
        ("  naive: x[::3] decimation", decimate,
         f"{decimate.median_us / down.median_us:.2f}× ours, " + alias_note("x[::3] decimation", rejection)),
        ("Upsampler 24k mono → 48k st (soxr)", up, ""),
        ("  naive: resample_poly per frame", poly_up, f"{poly_up.median_us / up.median_us:.1f}× ours"),
        *[(f"Mixer, {n} speaker{'s' if n > 1 else ''} (push all + pull)", cost, f"{cost.median_us / n:.1f} µs/speaker")
          for n, cost in mixers.items()],
    ]
    per_speaker = opus.median_us + down.median_us + mixers[4].median_us / 4
    receive = Cost(per_speaker)
    rows.append(("Receive path per speaker (decode+down+mix/4)", receive,
                 "goal ≤ 1 % " + ("✓" if receive.core_percent <= 1 else "✗")))

    load = os.getloadavg()[0]
    print(f"Audio stages: µs per {FRAME_MS} ms frame, lowest median of {ROUNDS} rounds of {FRAMES // ROUNDS} frames"
          f" (one core = {FRAME_US} µs per frame)")
    print(f"{os.cpu_count()} cores, 1-minute load average {load:.2f} (other work on the machine inflates every row)\n")
    print(f"{'stage':<48}{'µs/frame':>10}{'% core':>9}  note")
    print("-" * 100)
    for name, cost, note in rows:
        print(f"{name:<48}{cost.median_us:>10.1f}{cost.core_percent:>8.2f}%  {note}")
    ratio = poly.median_us / down.median_us
    print("-" * 100)
    print(f"soxr vs per-frame scipy: {ratio:.1f}× cheaper (goal ≥ 5×) " + ("✓" if ratio >= 5 else "✗"))


if __name__ == "__main__":
    main()

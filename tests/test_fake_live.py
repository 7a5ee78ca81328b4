"""`python -m tests.fake_live` as a person runs it: the printed commands work as printed and echo what was sent."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest

from bot.live.check import SILENCE_TAIL_MS, read_wav_as_live_input
from tests.fake_live import describe_audio

ROOT = Path(__file__).resolve().parents[1]


def write_wav(path: Path, freq: float, seconds: float, rate: int = 44_100) -> None:
    t = np.arange(int(rate * seconds)) / rate
    mono = (0.3 * 32767 * np.sin(2 * math.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(mono, 2).tobytes())


@pytest.fixture
def fake_cli():
    """The fake started exactly as README says, from the repository folder; yields (process, printed lines)."""
    process = subprocess.Popen([sys.executable, "-m", "tests.fake_live"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines: list[str] = []
    assert process.stdout is not None
    while not lines or lines[-1] != "Stop the fake with Ctrl-C.":
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else "fake exited"
        lines.append(line.rstrip("\n"))
    yield process, lines
    if process.poll() is None:  # stopped as a person stops it, so its certificate folder goes too
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def run_printed(line: str) -> subprocess.CompletedProcess[str]:
    """Run a printed command line through a shell, as a person pasting it would (from the repo folder)."""
    return subprocess.run(["bash", "-c", line], cwd=ROOT, capture_output=True, text=True, timeout=60)


def commands(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.startswith("  GEMINI_BASE_URL=")]


def test_printed_text_command_works_and_quotes_the_text(fake_cli):
    """The --text command as printed exits 0 and the reply quotes what was typed, with its length."""
    _, lines = fake_cli
    text_command = commands(lines)[0]
    assert text_command.endswith(" -m bot live-check --text hi")
    assert ".venv/bin/python" in text_command or sys.executable in text_command
    result = run_printed(text_command)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Gemini said: This is the fake Gemini. I received the text “hi” (2 characters)." in result.stdout


def test_printed_wav_command_echoes_length_checksum_and_pitch(fake_cli, tmp_path):
    """The --wav command: the fake reports exactly the bytes live-check sent (CRC-32) and the tone's pitch."""
    _, lines = fake_cli
    wav = tmp_path / "kid.wav"
    write_wav(wav, 600, 1.0)
    result = run_printed(commands(lines)[1].replace("your-recording.wav", str(wav)))
    assert result.returncode == 0, result.stdout + result.stderr
    sent = read_wav_as_live_input(wav) + bytes(32 * SILENCE_TAIL_MS)  # 16 kHz s16le: 32 bytes per ms
    assert f"CRC-32 {zlib.crc32(sent):08x}" in result.stdout
    assert f"Gemini heard: 1.50 s of audio ({len(sent):,} bytes" in result.stdout
    assert "1.00 s of it sound, strongest pitch about 600 Hz" in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_removes_the_temporary_folder(fake_cli, signum):
    """SIGTERM or Ctrl-C: a clean exit 0 and the certificate's temporary folder is gone."""
    process, lines = fake_cli
    cert = Path(commands(lines)[0].split("SSL_CERT_FILE=")[1].split()[0])
    assert cert.exists()
    process.send_signal(signum)
    assert process.wait(10) == 0
    assert not cert.parent.exists()
    assert process.stderr is not None and "Traceback" not in process.stderr.read()


def test_describe_audio_tells_different_inputs_apart():
    """Silence and two tones give different descriptions (length, checksum, pitch)."""
    rate = 16_000
    t = np.arange(rate) / rate
    tones = [(0.3 * 32767 * np.sin(2 * math.pi * f * t)).astype("<i2").tobytes() for f in (300, 1200)]
    assert describe_audio(bytes(640)).endswith("all of it silence")
    low, high = (describe_audio(pcm) for pcm in tones)
    assert "about 300 Hz" in low and "about 1200 Hz" in high and low != high

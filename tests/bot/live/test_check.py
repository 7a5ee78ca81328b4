"""`python -m bot live-check` against the fake Live server, in-process and as a real subprocess."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from bot.live.check import (
    LiveCheckRequest,
    add_arguments,
    read_wav_as_live_input,
    run_from_args,
    run_live_check,
)
from tests.fake_live import FakeLiveServer, make_client_settings

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
async def server():
    async with FakeLiveServer(reply_audio_ms=400) as fake:
        yield fake


def write_tone_wav(path: Path, rate: int, channels: int, seconds: float) -> None:
    t = np.arange(int(rate * seconds)) / rate
    mono = (0.3 * 32767 * np.sin(2 * math.pi * 300 * t)).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.repeat(mono, channels).tobytes())


async def test_text_check_reports_the_reply(server, monkeypatch):
    """A text check returns ok, the reply transcript, a first-audio time and the reply length."""
    settings = make_client_settings(server, monkeypatch)
    report = await run_live_check(settings, LiveCheckRequest(text="Say hello in three words.", timeout=10))
    assert report.ok, report.reason
    assert report.output_transcript == server.reply_text
    assert report.first_audio_ms is not None and report.first_audio_ms >= 0
    assert report.reply_seconds == pytest.approx(0.4)
    assert server.connections[0].texts == ["Say hello in three words."]
    print(f"fake-server time to first audio byte (text): {report.first_audio_ms:.1f} ms")


async def test_wav_check_streams_16k_mono_then_ends_the_stream(server, monkeypatch, tmp_path):
    """A 44.1 kHz stereo WAV arrives as 16 kHz mono at the server, with a silence tail and audio_stream_end."""
    settings = make_client_settings(server, monkeypatch)
    path = tmp_path / "hello.wav"
    write_tone_wav(path, 44_100, 2, 0.3)
    report = await run_live_check(settings, LiveCheckRequest(wav=path, timeout=10))
    assert report.ok, report.reason
    assert report.input_transcript == server.child_text
    conn = server.connections[0]
    assert conn.audio_stream_ends == 1
    expected = len(read_wav_as_live_input(path))
    assert expected == pytest.approx(16_000 * 2 * 0.3, abs=64)
    assert len(conn.audio) == expected + 16_000 * 2 // 2  # plus the 500 ms silence tail
    print(f"fake-server time to first audio byte (wav): {report.first_audio_ms:.1f} ms")


async def test_check_failure_is_a_sentence(server, monkeypatch):
    """A rejected key makes the check fail with the plain reason and exit code 1."""
    settings = make_client_settings(server, monkeypatch, gemini_api_key="wrong-key-abcdef")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    code = await run_from_args(settings, parser.parse_args(["--text", "hi", "--timeout", "5"]))
    assert code == 1
    report = await run_live_check(settings, LiveCheckRequest(text="hi", timeout=5))
    assert not report.ok and "GEMINI_API_KEY" in report.reason and "wrong-key-abcdef" not in report.reason


async def test_run_from_args_writes_the_reply_wav(server, monkeypatch, tmp_path, capsys):
    """--out saves the reply as a 24 kHz mono WAV and the output never shows the key."""
    settings = make_client_settings(server, monkeypatch)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "reply.wav"
    code = await run_from_args(settings, parser.parse_args(["--out", str(out)]))
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert server.reply_text in printed and "first audio after" in printed
    assert server.api_key not in printed
    with wave.open(str(out), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24_000, 1, 2)
        assert wav.getnframes() == 24_000 * 400 // 1000


async def test_cli_live_check_subprocess(tmp_path):
    """`python -m bot live-check --text hi` with only environment variables exits 0 and prints the reply."""
    async with FakeLiveServer(api_key="fake", reply_audio_ms=300) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GOOGLE_", "DISCORD_"))}
        env.update(GEMINI_BASE_URL=fake.url, SSL_CERT_FILE=str(fake.ca_file), DISCORD_TOKEN="x",
                   GEMINI_API_KEY="fake", PYTHONPATH=str(REPO))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "live-check", "--text", "hi", "--timeout", "20", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(process.communicate(), 45)
    text = output.decode()
    assert process.returncode == 0, text
    assert fake.reply_text in text and "first audio after" in text
    assert fake.connections[0].texts == ["hi"]


async def test_the_check_sends_the_bots_own_setup_and_reports_the_answer(server, monkeypatch):
    """live-check (and so doctor) dials with the setup a conversation sends and says Gemini accepted it."""
    from bot.live.options import live_connect_config
    from bot.live_setup import sample_tutor_setup
    from tests.fake_live import LIVE_PATH  # noqa: F401 - the fake is the real protocol's stand-in

    settings = make_client_settings(server, monkeypatch)
    report = await run_live_check(settings, LiveCheckRequest(text="hi", timeout=10))
    assert report.ok and report.setup_reply == "accepted the bot's setup (session session-1)"
    instruction, extras = sample_tutor_setup()
    sent = server.connections[0].setup
    assert sent["systemInstruction"]["parts"][0]["text"] == instruction
    expected = live_connect_config(settings, instruction, handle=None, seeding=False, extras=extras)
    assert len(sent["tools"]) == len(expected.tools)


async def test_a_refused_setup_is_reported_with_the_services_words(server, monkeypatch):
    """If Gemini refuses the bot's setup (1007), the check says so with the service's own reason."""
    from tests import fake_live_model

    rule = fake_live_model.SetupRule("tools", lambda s: bool(s.get("tools")), "Function calling is not supported.")
    monkeypatch.setattr(fake_live_model, "SETUP_RULES", (rule,))
    settings = make_client_settings(server, monkeypatch)
    report = await run_live_check(settings, LiveCheckRequest(text="hi", timeout=10))
    assert not report.ok and report.setup_reply.startswith("refused the bot's setup")
    assert "1007" in report.setup_reply and "Function calling is not supported" in report.setup_reply


async def test_a_setup_accepted_without_its_doubtful_fields_is_reported(server, monkeypatch):
    """If Gemini refuses the vocabulary or language code, the check still gets its reply and says what was refused."""
    from tests import fake_live_model

    monkeypatch.setattr(fake_live_model, "SETUP_RULES", (*fake_live_model.SETUP_RULES, *fake_live_model.DOUBTFUL_RULES))
    settings = make_client_settings(server, monkeypatch)
    report = await run_live_check(settings, LiveCheckRequest(text="hi", timeout=10))
    assert report.ok, report.reason
    assert report.setup_reply.startswith("refused part of the bot's setup: Gemini refused the session (code 1007: ")
    assert "Retried without custom_vocabulary and language_code. It accepted the rest (session session-1)." \
        in report.setup_reply

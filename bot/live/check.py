"""`python -m bot live-check`: one real round trip to Gemini Live, with the figures an operator wants.

It uses the same `LiveSession` the bot uses. A WAV file (any rate, any channel count) is converted
to 16 kHz mono and streamed at real-time pace in 20 ms frames, followed by a short silence tail and
`audio_stream_end`, just like a kid talking in a voice channel; `--text` sends typed text instead.
`first_audio_ms` is the time from the end of the input (last WAV frame queued, or the text sent) to
the first reply audio byte. The API key is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from bot.audio.formats import FRAME_MS, LIVE_INPUT, LIVE_INPUT_FRAME_BYTES, LIVE_OUTPUT
from bot.audio.wavfile import read_wav
from bot.config import Settings
from bot.live.events import AudioChunk, Failed, InputTranscript, OutputTranscript, TurnComplete
from bot.live.session import LiveConnectFailed, LiveConnectOptions, LiveSession

DEFAULT_TEXT = "Hello! Say hi back in one short sentence."
SILENCE_TAIL_MS = 500
CHECK_OPTIONS = LiveConnectOptions(max_retries=2, first_retry_delay=0.2, max_retry_delay=1.0, connect_timeout=15.0)


@dataclass(frozen=True, slots=True)
class LiveCheckRequest:
    """What to send: `text` or a `wav` file (text wins if both are set); `out` saves the reply."""

    text: str | None = None
    wav: Path | None = None
    out: Path | None = None
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class LiveCheckReport:
    """The outcome; `reason` is a plain-English sentence when `ok` is False."""

    ok: bool
    reason: str = ""
    first_audio_ms: float | None = None
    reply_seconds: float = 0.0
    input_transcript: str = ""
    output_transcript: str = ""
    reply_pcm: bytes = b""
    reply_rate: int = LIVE_OUTPUT.sample_rate
    setup_reply: str = ""  # what Gemini answered to the bot's own setup (accepted, or the refusal and why)


def read_wav_as_live_input(path: Path) -> bytes:
    """Any PCM or float WAV (see `bot.audio.wavfile`) → 16 kHz mono s16le; ValueError with a readable message."""
    audio = read_wav(path)
    mono = audio.mono()
    if audio.sample_rate != LIVE_INPUT.sample_rate:
        mono = soxr.resample(mono, audio.sample_rate, LIVE_INPUT.sample_rate, quality="HQ")
    return (np.clip(mono, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    """Mono s16le PCM → WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


async def _stream_input(session: LiveSession, request: LiveCheckRequest, pcm: bytes | None) -> float:
    """Send the input like a conversation would; returns when the last real input was queued."""
    if pcm is None:
        session.send_text(request.text or DEFAULT_TEXT)
        return time.monotonic()
    start = time.monotonic()
    frames = [pcm[i:i + LIVE_INPUT_FRAME_BYTES] for i in range(0, len(pcm), LIVE_INPUT_FRAME_BYTES)]
    silence = [bytes(LIVE_INPUT_FRAME_BYTES)] * (SILENCE_TAIL_MS // FRAME_MS)
    input_done = start
    for i, frame in enumerate(frames + silence):
        session.send_audio(frame)
        if i == len(frames) - 1:
            input_done = time.monotonic()
        await asyncio.sleep(max(0.0, start + (i + 1) * FRAME_MS / 1000 - time.monotonic()))
    session.end_audio_stream()
    return input_done


async def run_live_check(settings: Settings, request: LiveCheckRequest) -> LiveCheckReport:
    """Connect, send the input, collect the reply until turn_complete; never raises for Live problems."""
    try:
        pcm = read_wav_as_live_input(request.wav) if request.wav and not request.text else None
    except ValueError as exc:
        return LiveCheckReport(False, str(exc))
    from bot.live_setup import sample_tutor_setup  # the levels, tools and languages the bot's setup is made of

    instruction, extras = sample_tutor_setup()
    session = LiveSession(settings, system_instruction=instruction, extras=extras, connect_options=CHECK_OPTIONS)
    heard, said, audio = [], [], bytearray()
    setup = ""
    ended: TurnComplete | None = None
    first_audio_at: float | None = None
    rate = LIVE_OUTPUT.sample_rate
    sender: asyncio.Task[float] | None = None
    try:
        async with asyncio.timeout(request.timeout):
            await session.start()
            accepted = f"(session {session.server_session_id or 'without an id'})"
            setup = f"accepted the bot's setup {accepted}" if session.setup_refusal is None else \
                f"refused part of the bot's setup: {session.setup_refusal} It accepted the rest {accepted}."
            sender = asyncio.create_task(_stream_input(session, request, pcm))
            async for event in session.events():
                if isinstance(event, AudioChunk):
                    first_audio_at = first_audio_at or event.received_at
                    rate = event.sample_rate
                    audio += event.pcm
                elif isinstance(event, InputTranscript):
                    heard.append(event.text)
                elif isinstance(event, OutputTranscript):
                    said.append(event.text)
                elif isinstance(event, Failed):
                    return LiveCheckReport(False, event.reason, setup_reply=setup)
                elif isinstance(event, TurnComplete) and (audio or event.reason is not None):
                    ended = event  # (after generation_complete, once the reply had time to play)
                    break
            input_done = await sender
    except LiveConnectFailed as exc:
        refused = exc.failure.code is not None and 1007 <= exc.failure.code <= 1008
        setup = f"refused the bot's setup: {exc.failure.reason}" if refused else "did not answer the setup"
        return LiveCheckReport(False, str(exc), setup_reply=setup)
    except TimeoutError:
        return LiveCheckReport(False, f"No complete reply from Gemini within {request.timeout:g} s.",
                               setup_reply=setup)
    finally:
        if sender is not None and not sender.done():
            sender.cancel()
        await session.close()
    transcripts = {"input_transcript": "".join(heard).strip(), "output_transcript": "".join(said).strip()}
    if not audio:
        return LiveCheckReport(False, _no_audio_reason(ended), setup_reply=setup, **transcripts)
    first_ms = max(0.0, (first_audio_at or input_done) - input_done) * 1000
    return LiveCheckReport(True, "", first_ms, len(audio) / 2 / rate, reply_pcm=bytes(audio), reply_rate=rate,
                           setup_reply=setup, **transcripts)


def _no_audio_reason(ended: TurnComplete | None) -> str:
    if ended is not None and ended.blocked:
        return f"Gemini's safety filter blocked the reply ({ended.reason})."
    if ended is not None and ended.reason == "RESPONSE_REJECTED":
        return "Gemini chose not to answer (RESPONSE_REJECTED); try again with a clear question."
    return "Gemini ended the turn without any audio."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `live-check` sub-command's options."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--text", help=f"text to send (default: {DEFAULT_TEXT!r})")
    source.add_argument("--wav", type=Path, help="a WAV file to speak instead (any rate or channel count)")
    parser.add_argument("--out", type=Path, help="save the reply audio here as a 24 kHz mono WAV")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a whole reply (default 30)")


async def run_from_args(settings: Settings, args: argparse.Namespace) -> int:
    """Run the check from parsed arguments, print the figures; 0 on a reply, 1 with the reason."""
    request = LiveCheckRequest(text=args.text if args.text or args.wav else DEFAULT_TEXT, wav=args.wav,
                               out=args.out, timeout=args.timeout)
    source = f"WAV {request.wav}" if request.wav and not request.text else f"text {request.text!r}"
    print(f"live-check: {settings.gemini_model} (voice {settings.gemini_voice}), sending {source}")
    report = await run_live_check(settings, request)
    if report.setup_reply:
        print(f"Gemini {report.setup_reply}")
    if report.input_transcript:
        print(f"Gemini heard: {report.input_transcript}")
    if report.output_transcript:
        print(f"Gemini said: {report.output_transcript}")
    if not report.ok:
        print(f"live-check failed: {report.reason}")
        return 1
    print(f"first audio after {report.first_audio_ms:.0f} ms; {report.reply_seconds:.2f} s of reply audio")
    if request.out is not None:
        write_wav(request.out, report.reply_pcm, report.reply_rate)
        print(f"reply saved to {request.out}")
    return 0

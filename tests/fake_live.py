"""A local fake of the Gemini Live websocket, for the real google-genai SDK to talk to in tests.

The SDK always dials `wss://`, so the server serves TLS on 127.0.0.1 with a throw-away self-signed
certificate made at start-up; clients trust it through `SSL_CERT_FILE=server.ca_file` (set before the
`genai.Client` is built). Facts it mimics are in /work/shared/gemini_live_wire.md.

Usage::

    async with FakeLiveServer() as server:
        settings = make_client_settings(server, monkeypatch)    # Settings pointed at the fake
        ... LiveSession(settings, ...) ...
        await server.wait_for(lambda: server.replies_sent >= 1)
        server.sessions[-1].audio     # every input byte the "model" holds, after resumptions

Behaviour:
* Path `/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent` (a leading `//`
  is fine); anything else is HTTP 404. `x-goog-api-key` must equal `api_key`, else close 1007 after
  setup. A model in `unknown_models` is closed with 1008. `setup_failure=(code, reason)` closes every
  new connection right after setup (for retry tests).
* Setup is parsed whatever the key casing and answered with `{"setupComplete": {...}}`.
* `audioStreamEnd`, realtime text or client content with `turnComplete` (after the initial history)
  trigger a reply after `think_time`: input transcription of `child_text` (audio only), interleaved
  output transcription fragments of `reply_text` and 24 kHz s16le tone chunks, usage, `turnComplete`,
  then a `sessionResumptionUpdate` with a fresh handle and `lastConsumedClientMessageIndex`.
* Message indexes count the setup as 0, so the first realtime message is 1.
* Sessions: a connection whose setup carries a known handle continues that `FakeSession`; its `audio`
  is rolled back to what the handle covered, so after any number of resumptions `session.audio` is
  exactly the bytes the model "heard", with no gaps and no duplicates. An unknown handle → close 1008.
* Knobs and actions: `interrupt_next()`, `block_next(reason)`, `go_away(time_left, close_after)`,
  `drop()` (TCP reset, no close frame), `close(code, reason)`, `send_raw(obj)`,
  `send_resumption_update()`, `wait_for(predicate)`; `resumption_updates = False` withholds handles.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import math
import os
import shlex
import signal
import ssl
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bot.config import Settings

LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
DEADLINE_EXPIRED = "Deadline expired before operation could complete."
OUTPUT_RATE = 24_000


def make_self_signed_cert(directory: Path) -> tuple[Path, Path, str]:
    """Write a certificate + key for 127.0.0.1/localhost; returns (cert_file, key_file, cert_pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-gemini-live")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_text(cert_pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, cert_pem


def tone(ms: float, rate: int = OUTPUT_RATE, freq: float = 440.0) -> bytes:
    """A quiet sine tone as s16le mono PCM."""
    n = int(rate * ms / 1000)
    samples = (0.2 * 32767 * np.sin(2 * math.pi * freq * np.arange(n) / rate)).astype("<i2")
    return samples.tobytes()


def _get(obj: dict, *names: str) -> Any:
    """First present key among spellings (the SDK mixes camelCase and snake_case)."""
    for name in names:
        if name in obj:
            return obj[name]
    return None


@dataclass
class FakeSession:
    """The model-side state that survives resumption: what it heard and what was said."""

    id: str
    audio: bytearray = field(default_factory=bytearray)
    texts: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # client_content turns received as initial history
    handles: dict[str, int] = field(default_factory=dict)  # handle → len(audio) it covers


@dataclass
class FakeConnection:
    """One websocket connection and everything the client sent on it."""

    number: int
    path: str
    api_key: str | None
    setup: dict = field(default_factory=dict)
    handle_used: str | None = None
    session: FakeSession | None = None
    messages: list[dict] = field(default_factory=list)  # decoded client messages after setup, in order
    audio: bytearray = field(default_factory=bytearray)
    audio_stream_ends: int = 0
    texts: list[str] = field(default_factory=list)
    client_contents: list[dict] = field(default_factory=list)
    closed: bool = False
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None  # when the server saw the socket end
    ws: ServerConnection | None = field(default=None, repr=False)

    @property
    def model(self) -> str | None:
        return _get(self.setup, "model")

    @property
    def wants_initial_history(self) -> bool:
        history = _get(self.setup, "historyConfig", "history_config") or {}
        return bool(_get(history, "initialHistoryInClientContent", "initial_history_in_client_content"))


class FakeLiveServer:
    """Scriptable fake of Gemini Live over TLS on 127.0.0.1; an async context manager."""

    def __init__(self, *, api_key: str = "fake-gemini-key-0123456789", child_text: str = "Why is the sky blue?",
                 reply_text: str = "Great question! Sunlight bounces around in the air.", think_time: float = 0.02,
                 reply_audio_ms: float = 600.0, chunk_ms: float = 100.0, report_consumed_index: bool = True,
                 unknown_models: tuple[str, ...] = ("no-such-model",)) -> None:
        self.api_key = api_key
        self.child_text = child_text
        self.reply_text = reply_text
        self.think_time = think_time
        self.reply_audio_ms = reply_audio_ms
        self.chunk_ms = chunk_ms
        self.report_consumed_index = report_consumed_index
        self.unknown_models = set(unknown_models)
        self.setup_failure: tuple[int, str] | None = None
        self.resumption_updates = True  # False: replies carry no sessionResumptionUpdate (no handle yet)
        self.connections: list[FakeConnection] = []
        self.sessions: list[FakeSession] = []
        self.replies_sent = 0
        self._interrupt_next = False
        self._block_next: str | None = None
        self._handle_counter = 0
        self._tasks: set[asyncio.Task] = set()
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-live-")
        self._server: Server | None = None
        self._changed = asyncio.Event()
        self.ca_file, self.cert_pem, self.port = Path(), "", 0
        self.port_wanted = 0  # 0: any free port

    # lifecycle ---------------------------------------------------------------------------------
    async def __aenter__(self) -> FakeLiveServer:
        cert_file, key_file, self.cert_pem = make_self_signed_cert(Path(self._tmp.name))
        self.ca_file = cert_file
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self._server = await serve(self._handle, "127.0.0.1", self.port_wanted, ssl=context,
                                   process_request=self._check_path,
                                   max_size=None, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._tmp.cleanup()

    @property
    def url(self) -> str:
        """Base URL for `GEMINI_BASE_URL` (the SDK turns https into wss)."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def current(self) -> FakeConnection:
        """The newest connection that is still open."""
        open_ones = [c for c in self.connections if not c.closed]
        if not open_ones:
            raise RuntimeError("no open connection")
        return open_ones[-1]

    def audio_received(self) -> int:
        """Input audio bytes received over all connections (duplicates included)."""
        return sum(len(c.audio) for c in self.connections)

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until `predicate()` is true, re-checking whenever a client message arrives."""
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                try:
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()
                except TimeoutError:
                    pass

    # knobs and actions -------------------------------------------------------------------------
    def interrupt_next(self) -> None:
        """The next reply stops after its first chunk with `interrupted`, then `turnComplete`."""
        self._interrupt_next = True

    def block_next(self, reason: str = "GENERATED_CONTENT_SAFETY") -> None:
        """The next reply is a bare `turnComplete` with this `turnCompleteReason`."""
        self._block_next = reason

    async def send_raw(self, message: dict, connection: FakeConnection | None = None) -> None:
        """Send any JSON object to the client (e.g. an unknown-keys frame or a bundled message)."""
        conn = connection or self.current
        assert conn.ws is not None
        await conn.ws.send(json.dumps(message))

    async def send_resumption_update(self, connection: FakeConnection | None = None) -> str:
        """Issue a new handle covering everything received so far on this connection."""
        conn = connection or self.current
        assert conn.session is not None
        self._handle_counter += 1
        handle = f"handle-{self._handle_counter}"
        conn.session.handles[handle] = len(conn.session.audio)
        update: dict[str, Any] = {"newHandle": handle, "resumable": True}
        if self.report_consumed_index:
            update["lastConsumedClientMessageIndex"] = str(len(conn.messages))  # setup is index 0
        await self.send_raw({"sessionResumptionUpdate": update}, conn)
        return handle

    async def go_away(self, time_left: float = 1.0, close_after: float = 0.3) -> None:
        """Send GoAway, then close with 1011 "Deadline expired" after `close_after` s, as the real service does."""
        conn = self.current
        await self.send_raw({"goAway": {"timeLeft": f"{time_left:g}s"}}, conn)
        self._spawn(self._close_later(conn, close_after, 1011, DEADLINE_EXPIRED))

    async def close(self, code: int = 1011, reason: str = "Internal error encountered.") -> None:
        """Close the current connection with a close frame."""
        conn = self.current
        conn.closed = True
        assert conn.ws is not None
        await conn.ws.close(code, reason)

    async def drop(self) -> None:
        """Reset the current connection's TCP stream: no close frame, like a network failure."""
        conn = self.current
        conn.closed = True
        assert conn.ws is not None
        conn.ws.transport.abort()

    # server side -------------------------------------------------------------------------------
    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?")[0]
        if path not in (LIVE_PATH, "/" + LIVE_PATH):
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found\n")
        return None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_later(self, conn: FakeConnection, delay: float, code: int, reason: str) -> None:
        await asyncio.sleep(delay)
        if not conn.closed and conn.ws is not None:
            conn.closed = True
            await conn.ws.close(code, reason)

    async def _handle(self, ws: ServerConnection) -> None:
        conn = FakeConnection(len(self.connections) + 1, ws.request.path, ws.request.headers.get("x-goog-api-key"),
                              ws=ws)
        self.connections.append(conn)
        try:
            setup = json.loads(await ws.recv()).get("setup", {})
            conn.setup = setup
            if not await self._accept_setup(conn):
                return
            async for raw in ws:
                self._on_client_message(conn, json.loads(raw))
                self._changed.set()
        except Exception:  # the client went away; tests look at what was recorded
            pass
        finally:
            conn.closed = True
            conn.closed_at = time.monotonic()
            self._changed.set()

    async def _accept_setup(self, conn: FakeConnection) -> bool:
        assert conn.ws is not None
        model = (conn.model or "").removeprefix("models/")
        resumption = _get(conn.setup, "sessionResumption", "session_resumption") or {}
        handle = _get(resumption, "handle")
        refusal: tuple[int, str] | None = None
        if conn.api_key != self.api_key:
            refusal = (1007, "API key not valid. Please pass a valid API key.")
        elif model in self.unknown_models:
            # A close reason is at most 123 bytes, so the real service's sentence arrives cut short too.
            refusal = (1008, f"models/{model} is not found for API version v1beta, or is not supported for "
                             "bidiGenerateContent."[:123])
        elif handle is not None and not any(handle in s.handles for s in self.sessions):
            refusal = (1008, "Invalid session resumption handle.")
        elif self.setup_failure is not None:
            refusal = self.setup_failure
        if refusal is not None:
            conn.closed = True
            await conn.ws.close(*refusal)
            return False
        if handle is not None:
            session = next(s for s in self.sessions if handle in s.handles)
            del session.audio[session.handles[handle]:]  # the model only knows what the handle covered
            conn.handle_used = handle
        else:
            session = FakeSession(id=f"session-{len(self.sessions) + 1}")
            self.sessions.append(session)
        conn.session = session
        await conn.ws.send(json.dumps({"setupComplete": {"sessionId": session.id}}))
        return True

    def _on_client_message(self, conn: FakeConnection, message: dict) -> None:
        conn.messages.append(message)
        assert conn.session is not None
        realtime = _get(message, "realtime_input", "realtimeInput")
        content = _get(message, "client_content", "clientContent")
        if realtime is not None:
            blobs = [_get(realtime, "audio"), *(_get(realtime, "mediaChunks", "media_chunks") or [])]
            for blob in blobs:
                if blob:
                    pcm = base64.urlsafe_b64decode(blob["data"])
                    conn.audio += pcm
                    conn.session.audio += pcm
            text = _get(realtime, "text")
            if text:
                conn.texts.append(text)
                conn.session.texts.append(text)
                self._spawn(self._reply(conn, heard=None))
            if _get(realtime, "audioStreamEnd", "audio_stream_end"):
                conn.audio_stream_ends += 1
                self._spawn(self._reply(conn, heard=self.child_text))
        if content is not None:
            conn.client_contents.append(content)
            complete = bool(_get(content, "turnComplete", "turn_complete"))
            in_history = conn.wants_initial_history and not any(
                _get(c, "turnComplete", "turn_complete") for c in conn.client_contents[:-1])
            if in_history:
                conn.session.history.extend(_get(content, "turns") or [])
            elif complete:
                self._spawn(self._reply(conn, heard=None))

    async def _reply(self, conn: FakeConnection, heard: str | None) -> None:
        await asyncio.sleep(self.think_time)
        if conn.closed:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._send_reply(conn, heard)

    async def _send_reply(self, conn: FakeConnection, heard: str | None) -> None:
        send = conn.ws.send  # type: ignore[union-attr]
        if heard:
            await send(json.dumps({"serverContent": {"inputTranscription": {"text": heard}}}))
        if self._block_next is not None:
            reason, self._block_next = self._block_next, None
            await send(json.dumps({"serverContent": {"turnComplete": True, "turnCompleteReason": reason}}))
            if self.resumption_updates:
                await self.send_resumption_update(conn)
            return
        interrupt, self._interrupt_next = self._interrupt_next, False
        words = self.reply_text.split(" ")
        audio = tone(self.reply_audio_ms)
        chunk = int(OUTPUT_RATE * self.chunk_ms / 1000) * 2
        chunks = [audio[i:i + chunk] for i in range(0, len(audio), chunk)]
        for i, pcm in enumerate(chunks):
            share = words[i * len(words) // len(chunks):(i + 1) * len(words) // len(chunks)]
            fragment = (" " if i else "") + " ".join(share)
            await send(json.dumps({"serverContent": {"modelTurn": {"parts": [{"inlineData": {
                "mimeType": f"audio/pcm;rate={OUTPUT_RATE}", "data": base64.b64encode(pcm).decode()}}]}}}))
            if share:
                await send(json.dumps({"serverContent": {"outputTranscription": {"text": fragment}}}))
            if interrupt:
                await send(json.dumps({"serverContent": {"interrupted": True}}))
                break
            await asyncio.sleep(0.002)  # much faster than real time, but not one burst
        else:
            await send(json.dumps({"serverContent": {"generationComplete": True}}))
        await send(json.dumps({"serverContent": {"turnComplete": True},
                               "usageMetadata": {"totalTokenCount": 120, "promptTokenCount": 80,
                                                 "responseTokenCount": 40}}))
        self.replies_sent += 1
        if self.resumption_updates:
            await self.send_resumption_update(conn)


def make_client_settings(server: FakeLiveServer, monkeypatch: Any, **overrides: Any) -> Settings:
    """`Settings` pointed at `server`, with `SSL_CERT_FILE` set so a new `genai.Client` trusts it."""
    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_GENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    values: dict[str, Any] = {
        "discord_token": "discord-token-for-tests", "gemini_api_key": server.api_key,
        "gemini_base_url": server.url, "gemini_api_version": "v1beta", "gemini_model": "gemini-3.8-live",
        "gemini_voice": "Charon",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# Running it by hand (`python -m tests.fake_live`) --------------------------------------------------------------


def describe_audio(pcm: bytes, rate: int = 16_000) -> str:
    """What 16 kHz mono s16le input really was: length, bytes, CRC-32, how much was sound, its pitch and level."""
    samples = np.frombuffer(pcm[:len(pcm) - len(pcm) % 2], "<i2").astype(np.float32) / 32768
    summary = f"{len(samples) / rate:.2f} s of audio ({len(pcm):,} bytes, CRC-32 {zlib.crc32(pcm):08x})"
    frame = rate // 50  # 20 ms
    frames = samples[:len(samples) // frame * frame].reshape(-1, frame)
    loud = frames[np.sqrt((frames ** 2).mean(axis=1)) > 10 ** (-50 / 20)] if len(frames) else frames
    if not len(loud):
        return summary + ", all of it silence"
    sound = loud.reshape(-1)
    spectrum = np.abs(np.fft.rfft(sound * np.hanning(len(sound))))
    pitch = float(np.argmax(spectrum[1:]) + 1) * rate / len(sound)
    level = 20 * math.log10(max(float(np.sqrt((sound ** 2).mean())), 1e-9))
    return summary + f", {len(loud) * 0.02:.2f} s of it sound, strongest pitch about {pitch:.0f} Hz at {level:.0f} dBFS"


class EchoingFakeLiveServer(FakeLiveServer):
    """The fake for people: each reply says what this turn's input really was, so nothing looks like real
    transcription. Audio is described (`describe_audio`) as the input transcription and in the reply; text is
    quoted back."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._described_upto: dict[int, int] = {}  # connection number → audio bytes already described

    async def _send_reply(self, conn: FakeConnection, heard: str | None) -> None:
        start = self._described_upto.get(conn.number, 0)
        self._described_upto[conn.number] = len(conn.audio)
        if heard is not None:  # audio_stream_end: describe the audio since the last reply
            heard = describe_audio(bytes(conn.audio[start:]))
            self.reply_text = f"This is the fake Gemini. I received {heard}."
        else:
            text = conn.texts[-1] if conn.texts else ""
            self.reply_text = f"This is the fake Gemini. I received the text “{text}” ({len(text)} characters)."
        await super()._send_reply(conn, heard)


def recipe(server: FakeLiveServer, python: str, folder: Path) -> str:
    """The lines a person copies: one command whose settings apply to it alone (.env stays as it is)."""
    settings = {"GEMINI_BASE_URL": server.url, "SSL_CERT_FILE": str(server.ca_file), "GEMINI_API_KEY": server.api_key}
    prefix = " ".join(f"{name}={shlex.quote(value)}" for name, value in settings.items())
    command = f"{prefix} {shlex.quote(python)} -m bot live-check"
    return "\n".join([
        f"Fake Gemini Live is listening on {server.url}. It answers every turn by describing what it received.",
        f"In another terminal, in {folder}, run one of these (the {len(settings)} settings at the front apply to "
        "that command only; .env is not read for them and not changed):",
        "",
        f"  {command} --text hi",
        f"  {command} --wav your-recording.wav",
        "",
        "Stop the fake with Ctrl-C.",
    ])


async def serve_until_stopped(port: int, python: str, folder: Path) -> None:
    """Serve until SIGINT or SIGTERM, then close cleanly (the certificate's temporary folder goes too)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = EchoingFakeLiveServer()
    server.port_wanted = port
    async with server:
        print(recipe(server, python, folder), flush=True)
        await stop.wait()
    print("Fake Gemini Live stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.fake_live [--port N]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.fake_live",
                                     description="Run the fake Gemini Live server until Ctrl-C or SIGTERM.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = parser.parse_args(argv)
    folder = Path.cwd()
    python = os.path.relpath(sys.executable) if Path(sys.executable).is_relative_to(folder) else sys.executable
    try:
        asyncio.run(serve_until_stopped(args.port, python, folder))
    except OSError as exc:  # the port is taken, most likely
        print(f"Cannot start the fake on port {args.port}: {exc.strerror or exc}.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

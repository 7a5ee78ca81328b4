"""A local fake of the Gemini Live websocket that behaves like `gemini-3.8-live`, for the real SDK in tests.

The SDK always dials `wss://`, so the server serves TLS on 127.0.0.1 with a throw-away self-signed
certificate made at start-up; clients trust it through `SSL_CERT_FILE=server.ca_file` (set before the
`genai.Client` is built). What it mimics, with sources: /work/shared/gemini_live_38.md (§F lists where the
old fake was kinder) and /work/shared/gemini_live_wire.md. The rules that are not about the socket
(rejected setup fields, voice activity, usage, scripted tool calls) are in `tests.fake_live_model`.

Usage::

    async with FakeLiveServer() as server:
        settings = make_client_settings(server, monkeypatch)    # Settings pointed at the fake
        ... LiveSession(settings, ...) ...
        await server.wait_for(lambda: server.replies_sent >= 1)
        server.sessions[-1].audio     # every input byte the "model" holds, after resumptions

The default is what 3.8 does (each kinder behaviour of the old fake is now an explicit switch):
* Path `/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent` (a leading `//` is
  fine); anything else is HTTP 404. A wrong `x-goog-api-key` → close 1007 "API key not valid…"; a model in
  `unknown_models` → 1008; a setup field 3.8 rejects (`SETUP_RULES`) → 1007 with the service's sentence; an
  unknown or stale resumption handle → 1007. `setup_failure=(code, reason)` refuses every new connection;
  `setup_delay` (seconds, `math.inf` = never) holds the `setupComplete` back.
* Turns end by server-side voice activity detection on the audio received: `vad_silence_ms` of silence after
  speech, or `audioStreamEnd`. Realtime text and client content with `turnComplete` (after the initial
  history) are answered too. Voiced input while a reply is generated or still playing interrupts it
  (`barge_in_ms`), as does new text.
* A reply: `sessionResumptionUpdate {resumable: false}` while generating; then chunks that each carry audio
  AND its output transcript in one event (`bundle_parts`); the input transcription of `child_text` arrives
  once, `finished: true`, at `input_transcript_at` ("before", "with_first_chunk", "after_first_chunk"
  (default), "after_generation", "after_turn"), and `interimInputTranscription` hypotheses arrive while the
  kid speaks (`interim_every_ms`); `generationComplete`; `turnComplete` only once the reply's playback time
  has passed since its first chunk (`turn_complete_after_playback`), with per-turn `usageMetadata` that grows
  (the whole context is billed every turn; TEXT/AUDIO details, `thoughtsTokenCount`); then a resumable
  `sessionResumptionUpdate` with a new handle and NO `lastConsumedClientMessageIndex`
  (`report_consumed_index` brings the old kinder index back). An interrupted reply goes `interrupted` →
  `turnComplete`, no `generationComplete`.
* Sessions: a connection whose setup carries a known handle continues that `FakeSession`; its `audio` is rolled
  back to what the handle covered, so `session.audio` is exactly what the model heard — duplicates included.
  A connection still open on the state it resumed from (a GoAway hand-over) goes on with a copy of its own.
  `latency_s` (default 50 ms, the network; 0 = localhost) delays every client message on its way in, so a
  handle covers only what had arrived, and what is on its way when the socket ends is lost.
* Connection lifetime: `goAway {timeLeft: "60s"}` `go_away_lead_s` before `connection_lifetime_s`, then close
  1011 "Deadline expired…"; `go_away(time_left)` does it now; `expire()` closes with that 1011 and no GoAway
  (3.8 has been seen to do so at 58:00).
* Scripted turns: `interrupt_next()`, `block_next(reason)` (bare turnComplete with a safety reason),
  `reject_next()` (RESPONSE_REJECTED, no audio: proactive audio chose not to answer), `ignore_next()` (no
  reply at all), `endless_next()` (a reply that never ends), `call_tool_next(name, args)` (a `toolCall` before
  the reply; input before the response → `toolCallCancellation`; responses land in `tool_responses`; an empty
  result gets the call made again, twice),
  `answering = False` (takes audio, never answers).
* Actions: `drop()` (TCP reset), `close(code, reason)`, `send_raw(obj)`, `send_frame(text)` (any text frame,
  e.g. not JSON), `send_resumption_update()`, `wait_for(predicate)`.
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
from tests.fake_live_model import (
    INPUT_RATE,
    OUTPUT_RATE,
    ActivityDetector,
    ContextMeter,
    ToolCallScript,
    close_reason,
    get,
    interim_text,
    rejected_setup,
    tone,
)
from tests.fake_live_reply import Plan, Reply

LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
DEADLINE_EXPIRED = "Deadline expired before operation could complete."
BAD_KEY = "API key not valid. Please pass a valid API key."
STALE_HANDLE = "Session resumption handle is invalid or has expired."
INPUT_TIMINGS = ("before", "with_first_chunk", "after_first_chunk", "after_generation", "after_turn")

__all__ = ["DEADLINE_EXPIRED", "FakeConnection", "FakeLiveServer", "FakeSession", "make_client_settings",
           "replayed_overlap", "tone"]


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


@dataclass
class FakeSession:
    """The model-side state that survives resumption: what it heard and what was said."""

    id: str
    audio: bytearray = field(default_factory=bytearray)
    texts: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # client_content turns received as initial history
    handles: dict[str, tuple[int, ContextMeter]] = field(default_factory=dict)  # handle → (len(audio), context)
    meter: ContextMeter = field(default_factory=ContextMeter)

    def fork(self, new_id: str) -> FakeSession:
        """A copy that goes its own way (what the old connection hears after a resume elsewhere is not resumed)."""
        return FakeSession(new_id, bytearray(self.audio), list(self.texts), list(self.history), dict(self.handles),
                           self.meter.copy())


def replayed_overlap(heard: bytes, sent: bytes) -> int | None:
    """Bytes heard twice if `heard` is `sent` with one stretch repeated at one point; None if anything is missing.

    That is what resuming without a consumed index does: input sent shortly before the newest handle is
    replayed on the new connection, so the model may hear it twice, but never misses a byte.
    """
    duplicated = len(heard) - len(sent)
    if duplicated < 0:
        return None
    first_difference = next((i for i, (a, b) in enumerate(zip(heard, sent, strict=False)) if a != b), len(sent))
    for join in range(first_difference, duplicated - 1, -1):  # heard = sent[:join] + sent[join - duplicated:]
        if heard[join:] == sent[join - duplicated:]:
            return duplicated
    return None


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
    tool_responses: list[dict] = field(default_factory=list)
    refusal: tuple[int, str] | None = None  # the close the setup earned, if refused
    closed: bool = False
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None  # when the server saw the socket end
    ws: ServerConnection | None = field(default=None, repr=False)
    activity: ActivityDetector = field(default_factory=lambda: ActivityDetector(None))
    reply: asyncio.Task | None = field(default=None, repr=False)
    interrupt: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    interims_sent: int = 0

    @property
    def model(self) -> str | None:
        return get(self.setup, "model")

    @property
    def wants_initial_history(self) -> bool:
        history = get(self.setup, "historyConfig", "history_config") or {}
        return bool(get(history, "initialHistoryInClientContent", "initial_history_in_client_content"))

    @property
    def wants_resumption(self) -> bool:
        return get(self.setup, "sessionResumption", "session_resumption") is not None

    @property
    def replying(self) -> bool:
        """A reply is being generated or is still playing out (its turnComplete is not sent yet)."""
        return self.reply is not None and not self.reply.done()


class FakeLiveServer:
    """Scriptable fake of Gemini Live (gemini-3.8-live behaviour) over TLS on 127.0.0.1; an async context manager."""

    def __init__(self, *, api_key: str = "fake-gemini-key-0123456789", child_text: str = "Why is the sky blue?",
                 reply_text: str = "Great question! Sunlight bounces around in the air.", think_time: float = 0.02,
                 reply_audio_ms: float = 600.0, chunk_ms: float = 100.0,
                 unknown_models: tuple[str, ...] = ("no-such-model",),
                 report_consumed_index: bool = False, bundle_parts: bool = True,
                 input_transcript_at: str = "after_first_chunk", interim_every_ms: float | None = 300.0,
                 turn_complete_after_playback: bool = True, vad_silence_ms: float | None = 2000.0,
                 barge_in_ms: float | None = 250.0, connection_lifetime_s: float | None = 600.0,
                 go_away_lead_s: float = 60.0, thoughts_tokens: int = 136, output_rate: int = OUTPUT_RATE,
                 honours_silence_duration: bool = False, latency_s: float = 0.05) -> None:
        if input_transcript_at not in INPUT_TIMINGS:
            raise ValueError(f"input_transcript_at must be one of {INPUT_TIMINGS}")
        self.api_key = api_key
        self.child_text = child_text
        self.reply_text = reply_text
        self.think_time = think_time
        self.reply_audio_ms = reply_audio_ms
        self.chunk_ms = chunk_ms
        self.unknown_models = set(unknown_models)
        self.report_consumed_index = report_consumed_index  # kinder than 3.8: the Gemini API never sends it
        self.bundle_parts = bundle_parts  # False: audio and transcript in separate events (2.5's shape)
        self.input_transcript_at = input_transcript_at
        self.interim_every_ms = interim_every_ms
        self.turn_complete_after_playback = turn_complete_after_playback  # False: right after generationComplete
        self.vad_silence_ms = vad_silence_ms  # None: only audioStreamEnd ends a spoken turn
        # 3.1 ignores the setup's silence_duration_ms (unverified for 3.8): True uses it instead of vad_silence_ms
        self.honours_silence_duration = honours_silence_duration
        self.barge_in_ms = barge_in_ms  # None: speech never interrupts a reply
        self.connection_lifetime_s = connection_lifetime_s
        self.go_away_lead_s = go_away_lead_s
        self.thoughts_tokens = thoughts_tokens
        # Client messages reach the model this long after they were sent: Google is ~50–150 ms away (localhost is
        # not), so a handle never covers the input still on its way. 0: the kinder localhost.
        self.latency_s = latency_s
        self.output_rate = output_rate
        self.setup_failure: tuple[int, str] | None = None
        self.setup_delay = 0.0  # seconds before setupComplete; math.inf: never
        self.resumption_updates = True  # False: replies carry no resumable sessionResumptionUpdate (no handle yet)
        self.answering = True  # False: takes input and never answers anything
        self.connections: list[FakeConnection] = []
        self.sessions: list[FakeSession] = []
        self.replies_sent = 0
        self.usage_reports: list[dict] = []
        self.tool_calls: list[dict] = []  # every functionCall sent, with its id
        self.tool_responses: list[dict] = []  # every functionResponse received
        self.tool_cancellations: list[str] = []  # ids cancelled
        self.undeclared_tool_calls: list[str] = []  # scripted calls the setup declared no function for (not sent)
        self._plans: list[Plan] = []
        self._handle_counter = 0
        self._tool_counter = 0
        self._tool_answered: dict[str, asyncio.Event] = {}
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

    # scripted turns ----------------------------------------------------------------------------
    def interrupt_next(self) -> None:
        """The next reply stops after its first chunk with `interrupted`, then `turnComplete`."""
        self._plans.append(Plan(interrupt=True))

    def block_next(self, reason: str = "GENERATED_CONTENT_SAFETY") -> None:
        """The next reply is a bare `turnComplete` with this `turnCompleteReason` (a safety block)."""
        self._plans.append(Plan("blocked", reason=reason))

    def reject_next(self) -> None:
        """The next turn is `turnComplete` with RESPONSE_REJECTED and no audio (proactive audio stayed quiet)."""
        self._plans.append(Plan("rejected", reason="RESPONSE_REJECTED"))

    def ignore_next(self) -> None:
        """The next turn gets no reply at all (only its input transcription)."""
        self._plans.append(Plan("ignored"))

    def endless_next(self) -> None:
        """The next reply streams audio until the connection closes or the reply is interrupted."""
        self._plans.append(Plan("endless"))

    def call_tool_next(self, name: str, args: dict | None = None, *, blocking: bool = False) -> ToolCallScript:
        """The next reply starts with a `toolCall` to `name`; returns the script (its `id` is set when sent)."""
        script = ToolCallScript(name, dict(args or {}), blocking)
        self._plans.append(Plan(tool=script))
        return script

    # actions -----------------------------------------------------------------------------------
    async def send_raw(self, message: dict, connection: FakeConnection | None = None) -> None:
        """Send any JSON object to the client (e.g. an unknown-keys frame or a bundled message)."""
        await self.send_frame(json.dumps(message), connection)

    async def send_frame(self, text: str, connection: FakeConnection | None = None) -> None:
        """Send one text frame exactly as given (it need not be JSON)."""
        conn = connection or self.current
        assert conn.ws is not None
        await conn.ws.send(text)

    async def send_resumption_update(self, connection: FakeConnection | None = None) -> str:
        """Issue a new handle covering everything received so far on this connection."""
        conn = connection or self.current
        assert conn.session is not None
        self._handle_counter += 1
        handle = f"handle-{self._handle_counter}"
        conn.session.handles[handle] = (len(conn.session.audio), conn.session.meter.copy())
        update: dict[str, Any] = {"newHandle": handle, "resumable": True}
        if self.report_consumed_index:
            update["lastConsumedClientMessageIndex"] = str(len(conn.messages))  # setup is index 0
        await self.send_raw({"sessionResumptionUpdate": update}, conn)
        return handle

    async def go_away(self, time_left: float = 60.0, close_after: float | None = None,
                      connection: FakeConnection | None = None) -> None:
        """Send GoAway, then close with 1011 "Deadline expired" when `time_left` (or `close_after`) has passed."""
        conn = connection or self.current
        await self.send_raw({"goAway": {"timeLeft": f"{time_left:g}s"}}, conn)
        self._spawn(self._close_later(conn, time_left if close_after is None else close_after, 1011,
                                      DEADLINE_EXPIRED))

    async def expire(self, connection: FakeConnection | None = None) -> None:
        """The hard deadline: close with 1011 "Deadline expired" and no GoAway first."""
        conn = connection or self.current
        conn.closed = True
        assert conn.ws is not None
        await conn.ws.close(1011, DEADLINE_EXPIRED)

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

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _close_later(self, conn: FakeConnection, delay: float, code: int, reason: str) -> None:
        await asyncio.sleep(delay)
        if not conn.closed and conn.ws is not None:
            conn.closed = True
            await conn.ws.close(code, reason)

    async def _lifetime(self, conn: FakeConnection, lifetime: float) -> None:
        """The service ends every connection: GoAway `go_away_lead_s` before the end, then the 1011."""
        await asyncio.sleep(max(0.0, lifetime - self.go_away_lead_s))
        if not conn.closed:
            with contextlib.suppress(ConnectionClosed):
                await self.go_away(min(self.go_away_lead_s, lifetime), connection=conn)

    async def _handle(self, ws: ServerConnection) -> None:
        conn = FakeConnection(len(self.connections) + 1, ws.request.path, ws.request.headers.get("x-goog-api-key"),
                              ws=ws, activity=ActivityDetector(self.vad_silence_ms))
        self.connections.append(conn)
        try:
            setup = json.loads(await ws.recv()).get("setup", {})
            conn.setup = setup
            if not await self._accept_setup(conn):
                return
            await self._receive(conn, ws)
        except Exception:  # the client went away; tests look at what was recorded
            pass
        finally:
            conn.closed = True
            conn.closed_at = time.monotonic()
            if conn.reply is not None:
                conn.reply.cancel()
            self._changed.set()

    def _refusal(self, conn: FakeConnection, handle: str | None) -> tuple[int, str] | None:
        model = (conn.model or "").removeprefix("models/")
        if conn.api_key != self.api_key:
            return 1007, BAD_KEY
        if model in self.unknown_models:
            return 1008, close_reason(f"models/{model} is not found for API version v1beta, or is not supported "
                                      "for bidiGenerateContent.")
        if (rule := rejected_setup(conn.setup)) is not None:
            return 1007, close_reason(rule.reason)
        if handle is not None and not any(handle in s.handles for s in self.sessions):
            return 1007, STALE_HANDLE
        return self.setup_failure

    async def _receive(self, conn: FakeConnection, ws: ServerConnection) -> None:
        """Every client message after the setup, each `latency_s` after it was sent (the network between the bot
        and Google): what is still on its way when the server ends the socket never reaches the model; what the
        client sent before closing it arrives."""
        if not self.latency_s:
            async for raw in ws:
                self._on_client_message(conn, json.loads(raw))
                self._changed.set()
            return
        on_the_way: asyncio.Queue[tuple[float, str | bytes]] = asyncio.Queue()

        async def arrive() -> None:
            while True:
                due, raw = await on_the_way.get()
                await asyncio.sleep(due - time.monotonic())
                self._on_client_message(conn, json.loads(raw))
                self._changed.set()
                on_the_way.task_done()

        arriving = asyncio.create_task(arrive())
        try:
            async for raw in ws:
                on_the_way.put_nowait((time.monotonic() + self.latency_s, raw))
            if not conn.closed:  # the client closed it (the server's own closes mark the connection first)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(on_the_way.join(), self.latency_s + 1.0)
        finally:
            arriving.cancel()

    async def _accept_setup(self, conn: FakeConnection) -> bool:
        assert conn.ws is not None
        resumption = get(conn.setup, "sessionResumption", "session_resumption") or {}
        handle = get(resumption, "handle")
        refusal = self._refusal(conn, handle)
        if refusal is not None:
            conn.closed, conn.refusal = True, refusal
            await conn.ws.close(*refusal)
            return False
        if handle is not None:
            session = next(s for s in self.sessions if handle in s.handles)
            covered, meter = session.handles[handle]
            del session.audio[covered:]  # the model only knows what the handle covered
            session.meter = meter.copy()
            conn.handle_used = handle
            for other in self.connections:  # one still open on the state resumed from goes on with its own copy
                if other is not conn and other.session is session and not other.closed:
                    other.session = session.fork(f"{session.id}-left")
        else:
            session = FakeSession(id=f"session-{len(self.sessions) + 1}")
            instruction = get(conn.setup, "systemInstruction", "system_instruction") or {}
            session.meter.text_chars = sum(len(p.get("text") or "") for p in instruction.get("parts") or [])
            self.sessions.append(session)
        conn.session = session
        detection = get(get(conn.setup, "realtimeInputConfig", "realtime_input_config") or {},
                        "automatic_activity_detection", "automaticActivityDetection") or {}
        silence = get(detection, "silence_duration_ms", "silenceDurationMs")
        if self.honours_silence_duration and silence:
            conn.activity = ActivityDetector(float(silence))
        if self.setup_delay:  # held back; a client that gives up meanwhile closes the socket, which ends the wait
            delay = None if math.isinf(self.setup_delay) else self.setup_delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.ws.wait_closed(), delay)
            if conn.ws.close_code is not None:
                return False
        await conn.ws.send(json.dumps({"setupComplete": {"sessionId": session.id}}))
        if self.connection_lifetime_s is not None:
            self._spawn(self._lifetime(conn, self.connection_lifetime_s))
        return True

    def _on_client_message(self, conn: FakeConnection, message: dict) -> None:
        conn.messages.append(message)
        assert conn.session is not None
        realtime = get(message, "realtime_input", "realtimeInput")
        content = get(message, "client_content", "clientContent")
        tool_response = get(message, "tool_response", "toolResponse")
        if realtime is not None:
            self._on_realtime_input(conn, realtime)
        if content is not None:
            self._on_client_content(conn, content)
        if tool_response is not None:
            for response in get(tool_response, "functionResponses", "function_responses") or []:
                conn.tool_responses.append(response)
                self.tool_responses.append(response)
                if (answered := self._tool_answered.get(response.get("id"))) is not None:
                    answered.set()

    def _on_realtime_input(self, conn: FakeConnection, realtime: dict) -> None:
        assert conn.session is not None
        blobs = [get(realtime, "audio"), *(get(realtime, "mediaChunks", "media_chunks") or [])]
        for blob in blobs:
            if blob:
                self._on_audio(conn, base64.urlsafe_b64decode(blob["data"]))
        text = get(realtime, "text")
        if text:
            conn.texts.append(text)
            conn.session.texts.append(text)
            conn.session.meter.text_chars += len(text)
            self._user_activity(conn)
            self._start_reply(conn, heard=None)
        if get(realtime, "audioStreamEnd", "audio_stream_end"):
            conn.audio_stream_ends += 1
            if conn.activity.end() == "end":
                self._start_reply(conn, heard=self.child_text)

    def _on_audio(self, conn: FakeConnection, pcm: bytes) -> None:
        assert conn.session is not None
        conn.audio += pcm
        conn.session.audio += pcm
        conn.session.meter.audio_in_s += len(pcm) / 2 / INPUT_RATE
        change = conn.activity.feed(pcm)
        if change == "start":
            conn.interims_sent = 0
        if conn.activity.speaking:
            if self.barge_in_ms is not None and conn.activity.voiced_ms >= self.barge_in_ms:
                self._user_activity(conn)
            self._maybe_send_interim(conn)
        if change == "end":
            self._start_reply(conn, heard=self.child_text)

    def _maybe_send_interim(self, conn: FakeConnection) -> None:
        if self.interim_every_ms is None or not self.answering:
            return
        text = interim_text(self.child_text.split(), conn.activity.voiced_ms, self.interim_every_ms)
        shown = len(text.split()) if text else 0
        if text and shown > conn.interims_sent:
            conn.interims_sent = shown
            self._spawn(self._send_quietly(conn, {"serverContent": {"interimInputTranscription": {"text": text}}}))

    def _user_activity(self, conn: FakeConnection) -> None:
        """The user speaks (or types) now: an answer in progress is interrupted, a pending tool call cancelled."""
        if conn.replying:
            conn.interrupt.set()
        pending = [call_id for call_id, answered in self._tool_answered.items() if not answered.is_set()]
        if pending:
            for call_id in pending:
                self._tool_answered.pop(call_id).set()
            self.tool_cancellations.extend(pending)
            self._spawn(self._send_quietly(conn, {"toolCallCancellation": {"ids": pending}}))

    def _on_client_content(self, conn: FakeConnection, content: dict) -> None:
        assert conn.session is not None
        conn.client_contents.append(content)
        turns = get(content, "turns") or []
        conn.session.meter.text_chars += sum(len(p.get("text") or "") for t in turns for p in t.get("parts") or [])
        complete = bool(get(content, "turnComplete", "turn_complete"))
        in_history = conn.wants_initial_history and not any(
            get(c, "turnComplete", "turn_complete") for c in conn.client_contents[:-1])
        if in_history:
            conn.session.history.extend(turns)
        elif complete:
            self._user_activity(conn)  # turn_complete=true unconditionally interrupts generation on 3.8
            self._start_reply(conn, heard=None)

    async def _send_quietly(self, conn: FakeConnection, message: dict) -> None:
        if conn.ws is not None and not conn.closed:
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.send(json.dumps(message))

    # replies -----------------------------------------------------------------------------------
    def _start_reply(self, conn: FakeConnection, heard: str | None) -> None:
        """Answer the input that just ended; a reply still running is interrupted first."""
        if not self.answering:
            return
        previous = conn.reply
        if previous is not None and not previous.done():
            conn.interrupt.set()
        conn.reply = self._spawn(self._reply(conn, heard, previous))

    async def _reply(self, conn: FakeConnection, heard: str | None, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        conn.interrupt.clear()
        await asyncio.sleep(self.think_time)
        if conn.closed:
            return
        plan = self._plans.pop(0) if self._plans else Plan()
        heard, reply_text = self._compose(conn, heard)
        with contextlib.suppress(ConnectionClosed):
            await Reply(self, conn, heard, reply_text, plan).run()

    def _compose(self, conn: FakeConnection, heard: str | None) -> tuple[str | None, str]:
        """What the model heard (None for text input) and what it will say; a subclass may describe the input."""
        return heard, self.reply_text

    def _next_tool_id(self) -> str:
        self._tool_counter += 1
        return f"call-{self._tool_counter}"


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

    def _compose(self, conn: FakeConnection, heard: str | None) -> tuple[str | None, str]:
        start = self._described_upto.get(conn.number, 0)
        self._described_upto[conn.number] = len(conn.audio)
        if heard is not None:  # the kid's speech ended: describe the audio since the last reply
            heard = describe_audio(bytes(conn.audio[start:]))
            return heard, f"This is the fake Gemini. I received {heard}."
        text = conn.texts[-1] if conn.texts else ""
        return None, f"This is the fake Gemini. I received the text “{text}” ({len(text)} characters)."


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

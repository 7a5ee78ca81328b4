"""One Discord voice server, for the bot's session: the voice gateway (v8) over TLS and its UDP port.

It speaks the protocol as documented (discord-api-docs, "Voice Connections"), so discord.py's own connect,
reconnect and resume code runs against it unchanged:

* IDENTIFY (0) → HELLO (8) and READY (2) with an SSRC, this server's UDP address and the transport mode; the UDP
  port answers IP discovery with the address it saw; SELECT_PROTOCOL (1) → SESSION_DESCRIPTION (4) with a secret
  key of this server's own and `dave_protocol_version`; HEARTBEAT (3) → HEARTBEAT_ACK (6).
* Every message it sends, JSON or binary, carries a sequence number and is kept, so RESUME (7) with the right
  token and session gets HELLO, RESUMED (9) and every message after the client's `seq_ack` again ("buffered
  resume"); a wrong one is closed with 4006, as Discord does. Messages sent while no socket is open wait for it.
* `close(code)` ends the socket with a close code (4014 disconnected, 4015 crashed, ...); `drop()` cuts the TCP
  connection without one (what the client sees as 1006). `forget_session()` makes the next RESUME fail (4006).

What the bot sends is recorded (`json_from_bot`, `binary_from_bot`, `rtp_from_bot`); what the call does (MLS
choreography, the other members' media) is driven by `tests/dave_harness.py`.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import os
import shutil
import socket
import ssl
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.fake_live import make_self_signed_cert

MODE = "aead_xchacha20_poly1305_rtpsize"
HEARTBEAT_INTERVAL_MS = 1000  # discord.py heartbeats every min(interval, 5 s)
UNSEQUENCED = {2, 6, 8, 9}  # READY, HEARTBEAT_ACK, HELLO, RESUMED: part of a handshake, never re-sent


@cache
def _certificate() -> tuple[Path, Path]:
    """One self-signed certificate for 127.0.0.1 per test process (making one costs a few milliseconds); its
    folder goes when the process exits."""
    directory = Path(tempfile.mkdtemp(prefix="fake-voice-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    cert_file, key_file, _pem = make_self_signed_cert(directory)
    return cert_file, key_file


def client_ssl_context() -> ssl.SSLContext:
    """What the bot's HTTP session must use to trust these servers."""
    return ssl.create_default_context(cafile=str(_certificate()[0]))


def _initiating_code(ws: ServerConnection) -> int | None:
    """The close code of whichever side closed first (None: the connection was cut)."""
    protocol = ws.protocol
    first = protocol.close_rcvd if protocol.close_rcvd_then_sent or protocol.close_sent is None else protocol.close_sent
    return first.code if first is not None else None


@dataclass
class _Sent:
    seq: int
    frame: str | bytes
    delivered: bool = False


@dataclass
class FakeVoiceServer:
    """A voice server at 127.0.0.1 (websocket endpoint + UDP port) holding one session for the bot."""

    token: str = field(default_factory=lambda: os.urandom(8).hex())
    bot_ssrc: int = 1001
    dave_protocol_version: int = 1
    transport_key: bytes = field(default_factory=lambda: os.urandom(32))
    json_from_bot: list[dict] = field(default_factory=list)
    binary_from_bot: list[bytes] = field(default_factory=list)
    rtp_from_bot: list[bytes] = field(default_factory=list)
    connections: int = 0  # websockets opened by the bot
    resumes: list[bool] = field(default_factory=list)  # per RESUME: accepted?
    close_codes: list[int | None] = field(default_factory=list)  # who closed each socket first, with what code

    def __post_init__(self) -> None:
        self.session_id: str | None = None  # the bot's, learned from IDENTIFY
        self.bot_address: tuple[str, int] | None = None  # learned from IP discovery
        self._seq = itertools.count(1)
        self._outbox: list[_Sent] = []
        self._ws: ServerConnection | None = None
        self._server: Server | None = None
        self._udp: socket.socket | None = None
        self._changed = asyncio.Event()
        self.port = 0

    async def start(self) -> FakeVoiceServer:
        cert_file, key_file = _certificate()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self._server = await serve(self._handle, "127.0.0.1", 0, ssl=context, max_size=None)
        self.port = self._server.sockets[0].getsockname()[1]
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind(("127.0.0.1", 0))
        self._udp.setblocking(False)
        asyncio.get_running_loop().add_reader(self._udp.fileno(), self._on_datagram)
        return self

    async def stop(self) -> None:
        if self._udp is not None:
            asyncio.get_running_loop().remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def endpoint(self) -> str:
        """What VOICE_SERVER_UPDATE carries (discord.py prepends wss:// and appends /?v=8)."""
        return f"127.0.0.1:{self.port}"

    @property
    def udp_address(self) -> tuple[str, int]:
        assert self._udp is not None
        return self._udp.getsockname()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # ---- to the bot ---------------------------------------------------------------------------------------------

    async def send_json(self, op: int, data: Any) -> int:
        """Send (or keep for the next socket) one JSON message; returns its sequence number (0 if unsequenced)."""
        seq = 0 if op in UNSEQUENCED else next(self._seq)
        message = {"op": op, "d": data, **({"seq": seq} if seq else {})}
        await self._send(seq, json.dumps(message))
        return seq

    async def send_binary(self, op: int, payload: bytes) -> int:
        """Send (or keep) one binary DAVE message: u16 sequence, opcode, payload."""
        seq = next(self._seq)
        await self._send(seq, struct.pack(">H", seq & 0xFFFF) + bytes([op]) + payload)
        return seq

    async def _send(self, seq: int, frame: str | bytes) -> None:
        sent = _Sent(seq, frame)
        if seq:
            self._outbox.append(sent)
        if self._ws is not None:
            try:
                await self._ws.send(frame)
                sent.delivered = True
            except ConnectionClosed:
                pass

    def send_rtp(self, datagram: bytes) -> None:
        """Relay one RTP datagram to the bot's UDP address."""
        assert self._udp is not None and self.bot_address is not None, "the bot has not done IP discovery yet"
        self._udp.sendto(datagram, self.bot_address)

    async def close(self, code: int, reason: str = "") -> None:
        """Close the bot's socket with a close code (4014 disconnected, 4015 voice server crashed, ...)."""
        if self._ws is not None:
            ws, self._ws = self._ws, None
            await ws.close(code, reason)

    def forget_session(self) -> None:
        """The server no longer knows the bot's session: a RESUME is refused (4006); IDENTIFY starts a new one."""
        self.session_id = ""

    def drop(self) -> None:
        """Cut the TCP connection without a close frame (the client sees 1006)."""
        if self._ws is not None:
            ws, self._ws = self._ws, None
            ws.transport.abort()

    # ---- from the bot -------------------------------------------------------------------------------------------

    async def wait_for(self, condition: Callable[[], Any], within: float = 5.0) -> Any:
        """Until `condition()` is truthy (re-checked whenever the bot sends something); returns its value."""
        async with asyncio.timeout(within):
            while not (result := condition()):
                self._changed.clear()
                await self._changed.wait()
            return result

    def binary_ops(self, op: int) -> list[bytes]:
        """Payloads of every binary message with opcode `op` the bot sent."""
        return [frame[1:] for frame in self.binary_from_bot if frame[0] == op]

    def json_ops(self, op: int) -> list[Any]:
        return [message["d"] for message in self.json_from_bot if message["op"] == op]

    async def _handle(self, ws: ServerConnection) -> None:
        if self._ws is not None:  # a new socket replaces the old one, as on Discord
            await self._ws.close(4005, "Already authenticated.")
        self._ws = ws
        self.connections += 1
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    self.binary_from_bot.append(frame)
                else:
                    message = json.loads(frame)
                    self.json_from_bot.append(message)
                    await self._answer(ws, message)
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.close_codes.append(_initiating_code(ws))
            if self._ws is ws:
                self._ws = None
            self._changed.set()

    async def _answer(self, ws: ServerConnection, message: dict) -> None:
        op, data = message["op"], message.get("d")
        if op == 0:  # IDENTIFY: a new session, with a transport key of its own
            if self.session_id is not None:
                self.transport_key = os.urandom(32)
            self.session_id = data["session_id"]
            if data["token"] != self.token:
                await ws.close(4004, "Authentication failed.")
                return
            self._outbox.clear()
            await self.send_json(8, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS})
            host, port = self.udp_address
            await self.send_json(2, {"ssrc": self.bot_ssrc, "ip": host, "port": port, "modes": [MODE],
                                     "heartbeat_interval": 1})
        elif op == 1:  # SELECT_PROTOCOL
            await self.send_json(4, {"mode": data["data"]["mode"], "secret_key": list(self.transport_key),
                                     "dave_protocol_version": self.dave_protocol_version})
        elif op == 3:
            await self.send_json(6, {"t": data["t"] if isinstance(data, dict) else data})
        elif op == 7:  # RESUME
            ok = data["token"] == self.token and data["session_id"] == self.session_id
            self.resumes.append(ok)
            if not ok:
                await ws.close(4006, "Session is no longer valid.")
                return
            await self.send_json(8, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS})
            await self.send_json(9, None)
            seq_ack = data.get("seq_ack", -1)
            for sent in [s for s in self._outbox if s.seq > seq_ack]:
                await ws.send(sent.frame)
                sent.delivered = True

    def _on_datagram(self) -> None:
        assert self._udp is not None
        while True:
            try:
                data, address = self._udp.recvfrom(4096)
            except (BlockingIOError, OSError):
                return
            self.handle_datagram(data, address)

    def handle_datagram(self, data: bytes, address: tuple[str, int]) -> None:
        """One datagram from the bot: answer IP discovery (on every (re)connect), keep its RTP."""
        assert self._udp is not None
        if len(data) == 74 and data[:4] == struct.pack(">HH", 1, 70):  # IP discovery request
            self.bot_address = address
            host = address[0].encode().ljust(64, b"\0")
            self._udp.sendto(struct.pack(">HH", 2, 70) + data[4:8] + host + struct.pack(">H", address[1]), address)
        elif len(data) > 12 and data[1] == 0x78:
            self.rtp_from_bot.append(data)

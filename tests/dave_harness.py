"""A local stand-in for Discord's voice server, so DAVE receive runs offline through the real code paths.

Pieces (adapted from /work/shared/dave_recv_check.py):

* `FakeExternalSender` plays the voice server's MLS external sender (a P-256 key signing RFC 9420 Add proposals).
* `VoiceServerHarness.start()` builds a real `DaveVoiceRecvClient` whose gateway messages go through discord.py's
  real `DiscordVoiceWebSocket` handlers on a fake aiohttp socket: op 4 (session + op 26 key package), op 25
  (external sender), op 30 (welcome from the remote user's group; discord.py answers op 23), op 22 (transition), op 5
  (SSRC → user). The bot's UDP socket is bound on 127.0.0.1 and read by discord.py's SocketReader thread.
* `RemoteUser` is a remote client: its own davey session and RTP stream state; it builds datagrams the way Discord
  delivers them (aead_xchacha20_poly1305_rtpsize, 0xBEDE header extension in the AAD, DAVE-encrypted Opus) plus
  broken variants. `truncated_datagram()` / `garbage_datagram()` need no user.
* `Recorder` is an AudioSink that keeps what voice-recv delivers, for assertions.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import davey
import discord
import discord.opus
import nacl.secret
import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from discord.ext import voice_recv
from discord.gateway import DiscordVoiceWebSocket
from discord.voice_state import ConnectionFlowState

from bot.audio.dave import OPUS_SILENCE, DaveVoiceRecvClient

MODE = "aead_xchacha20_poly1305_rtpsize"
GUILD_ID, CHANNEL_ID, BOT_ID = 1, 900_000_000_000_000_002, 111
SPEAKER_ID, SPEAKER_SSRC, BOT_SSRC = 222, 2002, 1001
INVALID_OPUS = b"\xfb\x00"  # TOC code 3 with a frame count of 0: libopus reports "corrupted stream"

if not discord.opus.is_loaded():
    discord.opus._load_default()


# ---- MLS: the voice server's external sender ------------------------------------------------------------------

def _varint(n: int) -> bytes:
    """RFC 9000 variable-length integer, as MLS uses for vector lengths (RFC 9420 §2.1.2)."""
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return struct.pack(">H", n | 0x4000)
    return struct.pack(">I", n | 0x80000000)


def _vector(data: bytes) -> bytes:
    return _varint(len(data)) + data


class FakeExternalSender:
    """RFC 9420 ExternalSender plus Add proposals signed as external sender 0 (what Discord's server does)."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        public = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.package = _vector(public) + struct.pack(">H", 1) + _vector(b"fake-voice-server")

    def add_proposal(self, key_package: bytes, channel_id: int, epoch: int) -> bytes:
        """An MLSMessage(PublicMessage) proposing to add `key_package` to the channel's group."""
        framed = (
            _vector(channel_id.to_bytes(8, "big"))  # DAVE group id = channel id, u64 big-endian
            + struct.pack(">Q", epoch)
            + bytes([2]) + struct.pack(">I", 0)  # sender: external, index 0
            + _vector(b"")  # authenticated_data
            + bytes([2])  # content_type: proposal
            + struct.pack(">H", 1) + key_package  # Proposal: add
        )
        to_sign = struct.pack(">HH", 1, 1) + framed
        signature = self._key.sign(_vector(b"MLS 1.0 FramedContentTBS") + _vector(to_sign), ec.ECDSA(hashes.SHA256()))
        return struct.pack(">HH", 1, 1) + framed + _vector(signature)

    @staticmethod
    def proposals_payload(*messages: bytes) -> bytes:
        """DAVE op 27 body after the optype byte."""
        return _vector(b"".join(messages))


# ---- audio -----------------------------------------------------------------------------------------------------

def sine_frames(count: int, freq: float = 440.0, amplitude: int = 8000) -> list[bytes]:
    """`count` 20 ms frames of a 48 kHz stereo s16le sine, continuous across frames."""
    t = np.arange(count * 960) / 48_000
    mono = (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2")
    stereo = np.repeat(mono, 2).tobytes()
    return [stereo[i * 3840:(i + 1) * 3840] for i in range(count)]


def encode_opus(pcm_frames: Iterable[bytes]) -> list[bytes]:
    """Opus-encode 20 ms frames with one encoder, as a client does."""
    encoder = discord.opus.Encoder()
    return [encoder.encode(pcm, 960) for pcm in pcm_frames]


def reference_decode(opus_frames: Iterable[bytes]) -> list[bytes]:
    """What a fresh decoder makes of the frames in order: the bit-exact expectation for received audio."""
    decoder = discord.opus.Decoder()
    return [decoder.decode(frame, fec=False) for frame in opus_frames]


# ---- RTP datagrams ---------------------------------------------------------------------------------------------

def rtp_datagram(seq: int, ts: int, ssrc: int, payload: bytes, key: bytes, counter: int, *,
                 padding: int = 0, padding_count: int | None = None) -> bytes:
    """A datagram as Discord relays it: header + BEDE extension header as AAD, encrypted (ext body + payload).

    `padding` appends that many RTP padding bytes (P bit set); `padding_count` overrides the count byte to forge it.
    """
    first = 0x90 | (0x20 if padding else 0)
    header = bytes([first, 0x78]) + struct.pack(">HII", seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    aad = header + b"\xbe\xde" + struct.pack(">H", 1)
    body = bytes([0x10, 0x7F, 0x00, 0x00]) + payload  # one-byte extension id 1 (audio level) + padding to 4 bytes
    if padding:
        body += bytes(padding - 1) + bytes([padding if padding_count is None else padding_count])
    nonce = struct.pack(">I", counter) + bytes(20)
    return aad + nacl.secret.Aead(key).encrypt(body, aad, nonce).ciphertext + nonce[:4]


def truncated_datagram() -> bytes:
    """Shorter than an RTP header."""
    return b"\x90\x78" + os.urandom(6)


def garbage_datagram(ssrc: int) -> bytes:
    """A valid-looking RTP header followed by bytes that fail transport decryption."""
    return b"\x90\x78" + struct.pack(">HII", 7, 7, ssrc) + os.urandom(40)


@dataclass
class RemoteUser:
    """A remote client's stream: DAVE session (None = not in the group), RTP sequence, timestamp and nonce."""

    user_id: int
    ssrc: int
    transport_key: bytes
    session: davey.DaveSession | None = None
    seq: int = 100
    ts: int = 48_000
    counter: int = 1

    def _next(self, payload: bytes, *, padding: int = 0, padding_count: int | None = None,
              advance: bool = True) -> bytes:
        datagram = rtp_datagram(self.seq, self.ts, self.ssrc, payload, self.transport_key, self.counter,
                                padding=padding, padding_count=padding_count)
        self.counter += 1
        if advance:
            self.seq, self.ts = (self.seq + 1) & 0xFFFF, (self.ts + 960) & 0xFFFFFFFF
        return datagram

    def encrypt(self, opus: bytes) -> bytes:
        """DAVE-encrypt like the client does (silence stays plain); plain Opus when there is no session."""
        if self.session is None or opus == OPUS_SILENCE:
            return opus
        return self.session.encrypt_opus(opus)

    def frame(self, opus: bytes, *, padding: int = 0) -> bytes:
        """The next good datagram in the stream."""
        return self._next(self.encrypt(opus), padding=padding)

    def tampered(self, opus: bytes) -> bytes:
        """The next datagram, its DAVE ciphertext flipped: transport-valid, DAVE-undecryptable."""
        payload = bytearray(self.encrypt(opus))
        payload[5] ^= 0xFF
        return self._next(bytes(payload))

    def bad_padding(self, opus: bytes) -> bytes:
        """Padding bit set but a padding count of 0 (RFC 3550 counts the count byte itself, so ≥ 1).

        It takes no sequence slot: the shim drops it before any decoder sees it.
        """
        return self._next(self.encrypt(opus), padding=1, padding_count=0, advance=False)


# ---- receiving side --------------------------------------------------------------------------------------------

@dataclass
class Received:
    """One frame as voice-recv handed it to the sink."""

    ssrc: int
    sequence: int
    pcm: bytes
    opus: bytes | None
    user: object


@dataclass
class Recorder:
    """Thread-safe list of what the sink saw; `on_write` is a BasicSink callback."""

    frames: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_write(self, user: object, data: voice_recv.VoiceData) -> None:
        with self._lock:
            self.frames.append(Received(data.packet.ssrc, data.packet.sequence, data.pcm, data.opus, user))

    def sink(self) -> voice_recv.BasicSink:
        return voice_recv.BasicSink(self.on_write, decode=True)

    def of(self, ssrc: int) -> list[Received]:
        with self._lock:
            return [f for f in self.frames if f.ssrc == ssrc]


class _FakeAiohttpWebSocket:
    """Records what discord.py sends to the voice gateway."""

    def __init__(self) -> None:
        self.sent_json: list[dict] = []
        self.sent_bytes: list[bytes] = []

    async def send_str(self, text: str) -> None:
        self.sent_json.append(discord.utils._from_json(text))

    async def send_bytes(self, data: bytes) -> None:
        self.sent_bytes.append(bytes(data))

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        return True


def _member_data(user_id: int, *, bot: bool = False) -> dict:
    return {"user": {"id": str(user_id), "username": f"user{user_id}", "discriminator": "0", "avatar": None,
                     "bot": bot, "global_name": f"Kid {user_id}"},
            "roles": [], "joined_at": None, "deaf": False, "mute": False, "flags": 0}


class VoiceServerHarness:
    """A connected voice client in a DAVE call with one remote speaker, reached over loopback UDP."""

    def __init__(self, client: discord.Client, guild: discord.Guild, channel: discord.VoiceChannel) -> None:
        self.client, self.guild, self.channel = client, guild, channel
        self.transport_key = os.urandom(32)
        self.external_sender = FakeExternalSender()
        self.server_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.server_socket.bind(("127.0.0.1", 0))
        self._clients: list[voice_recv.VoiceRecvClient] = []
        self.vc: DaveVoiceRecvClient
        self.ws: DiscordVoiceWebSocket
        self.fake_ws: _FakeAiohttpWebSocket
        self.speaker: RemoteUser

    @classmethod
    async def start(cls, client_cls: type[voice_recv.VoiceRecvClient] = DaveVoiceRecvClient) -> VoiceServerHarness:
        """Connect `client_cls`, join the remote speaker's DAVE group (epoch 1) and map the speaker's SSRC."""
        client = discord.Client(intents=discord.Intents(guilds=True, voice_states=True))
        await client._async_setup_hook()
        state = client._connection
        state.user = discord.ClientUser(state=state, data={"id": str(BOT_ID), "username": "bot", "discriminator": "0",
                                                           "avatar": None, "bot": True})
        guild = discord.Guild(data={"id": str(GUILD_ID), "name": "g", "channels": [], "roles": [], "members": [],
                                    "voice_states": []}, state=state)
        channel = discord.VoiceChannel(state=state, guild=guild, data={
            "id": str(CHANNEL_ID), "name": "v", "type": 2, "position": 0, "guild_id": str(GUILD_ID),
            "permission_overwrites": [], "bitrate": 64000, "user_limit": 0})
        guild._add_channel(channel)
        harness = cls(client, guild, channel)
        harness.vc = await harness.connect(client_cls)
        await harness._join_speaker_group()
        return harness

    async def connect(self, client_cls: type[voice_recv.VoiceRecvClient]) -> voice_recv.VoiceRecvClient:
        """A voice client wired to a fresh fake gateway and a loopback UDP socket (no handshake yet)."""
        vc = client_cls(self.client, self.channel)
        connection = vc._connection
        self.fake_ws = _FakeAiohttpWebSocket()
        ws = DiscordVoiceWebSocket(self.fake_ws, asyncio.get_running_loop(), hook=connection.hook)
        ws._connection = connection
        ws.thread_id = threading.get_ident()
        ws.gateway = "wss://fake.invalid/?v=8"
        ws._max_heartbeat_timeout = 60.0
        connection.ws = self.ws = ws
        connection.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        connection.socket.bind(("127.0.0.1", 0))
        connection.socket.setblocking(False)
        connection.endpoint_ip, connection.voice_port = self.server_socket.getsockname()  # keepalives land here
        connection.ssrc = BOT_SSRC
        connection._socket_reader.resume()
        connection.state = ConnectionFlowState.connected
        self._clients.append(vc)
        return vc

    async def _join_speaker_group(self) -> None:
        ws, vc = self.ws, self.vc
        await self.gateway(4, {"mode": MODE, "secret_key": list(self.transport_key), "dave_protocol_version": 1})
        key_package = next(b[1:] for b in self.fake_ws.sent_bytes if b[0] == DiscordVoiceWebSocket.MLS_KEY_PACKAGE)
        await ws.received_binary_message(struct.pack(">H", 1) + bytes([25]) + self.external_sender.package)
        session = davey.DaveSession(1, SPEAKER_ID, CHANNEL_ID)
        session.get_serialized_key_package()
        session.set_external_sender(self.external_sender.package)
        commit_welcome = session.process_proposals(
            davey.ProposalsOperationType.append,
            self.external_sender.proposals_payload(self.external_sender.add_proposal(key_package, CHANNEL_ID, 0)),
        )
        session.process_commit(commit_welcome.commit)
        transition = 7
        await ws.received_binary_message(
            struct.pack(">H", 2) + bytes([30]) + struct.pack(">H", transition) + commit_welcome.welcome
        )
        await self.gateway(22, {"transition_id": transition})
        assert vc._connection.can_encrypt, "DAVE handshake did not complete"
        self.speaker = self.add_remote_user(SPEAKER_ID, SPEAKER_SSRC, session=session)
        await self.map_ssrc(SPEAKER_ID, SPEAKER_SSRC)

    def add_remote_user(self, user_id: int, ssrc: int, *, session: davey.DaveSession | None = None,
                        bot: bool = False) -> RemoteUser:
        """A guild member with an RTP stream; without `session` its frames are plain Opus (undecryptable here)."""
        self.guild._add_member(discord.Member(data=_member_data(user_id, bot=bot), guild=self.guild,
                                              state=self.client._connection))
        return RemoteUser(user_id, ssrc, self.transport_key, session=session)

    async def gateway(self, op: int, data: dict) -> None:
        """Deliver one JSON op through discord.py's handler (and thus the voice client's hook)."""
        await self.ws.received_message({"op": op, "d": data})

    async def map_ssrc(self, user_id: int, ssrc: int) -> None:
        """op 5 SPEAKING: what tells voice-recv whose SSRC it is."""
        await self.gateway(5, {"user_id": str(user_id), "ssrc": ssrc, "speaking": 1})

    def send(self, datagrams: Iterable[bytes]) -> int:
        """Send datagrams to the bot's voice socket; returns how many."""
        target = self.vc._connection.socket.getsockname()
        sent = 0
        for datagram in datagrams:
            self.server_socket.sendto(datagram, target)
            sent += 1
        return sent

    async def send_paced(self, datagrams: Iterable[bytes], pace: float = 0.002) -> None:
        """Send with a small gap between datagrams (the receive path is threaded; bursts can overrun buffers)."""
        for datagram in datagrams:
            self.send([datagram])
            await asyncio.sleep(pace)

    @staticmethod
    async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> bool:
        """Poll `condition` until true or `within` seconds pass; returns its last value."""
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                return condition()
            await asyncio.sleep(0.005)
        return True

    async def close(self) -> None:
        """Stop every client's threads and close sockets and the HTTP session."""
        for vc in self._clients:
            if vc.is_listening():
                vc.stop_listening()
            vc._connection._socket_reader.stop()
            vc._connection.socket.close()
        self.server_socket.close()
        await self.client.http.close()
        await asyncio.sleep(0.05)  # let reader-stopper threads run their after() callbacks

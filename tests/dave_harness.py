"""A DAVE call on a local stand-in for Discord, so receive, transitions and moves run offline through the real code.

* `VoiceServerHarness.start(parties=N)` connects a real `DaveVoiceRecvClient` the way `channel.connect()` does:
  discord.py's own `VoiceClient.connect` against `FakeMainGateway` (tests/helpers.py: VOICE_STATE_UPDATE and
  VOICE_SERVER_UPDATE through discord.py's own ConnectionState parsers) and `FakeVoiceServer`
  (tests/fake_voice_server.py: the voice gateway over TLS, UDP with IP discovery). N remote kids share one real
  davey MLS group with the bot; the first creates it, the others join one by one.
* `gateway(op, d)` / `binary(op, payload)` send one voice gateway message and return once discord.py has handled it
  (`sync()`: a HEARTBEAT_ACK its hook reports back). The call changes the way Discord's voice server drives them:
  `join`, `leave`, `downgrade`, `upgrade` (ops 11/13, 21–31), `move` (VOICE_SERVER_UPDATE: a new server),
  `crash` (the voice websocket closes; the bot resumes), `welcome_back` (after a fresh connection). Each takes a
  `between(step)` coroutine called after every protocol step, so a test can put frames in exactly the windows
  where receive used to lose them. `switch_at` says when the remote kids start *sending* with a new protocol
  context: "execute" (at op 22, as the DAVE whitepaper tells clients) or "commit" (as soon as their own MLS state
  moved, as davey-based clients do: new-epoch frames can reach the bot before its own commit).
* `FakeExternalSender` plays the voice server's MLS external sender (a P-256 key signing RFC 9420 Add and Remove
  proposals).
* `RemoteUser` is a kid's client: its davey session, RTP stream state and voice (a tone of its own pitch); it builds
  datagrams as Discord relays them (aead_xchacha20_poly1305_rtpsize, 0xBEDE extension in the AAD, DAVE-encrypted
  Opus), logs every frame it sent, and makes broken variants. `truncated_datagram()` / `garbage_datagram()` need
  no user.
* Receiving: `Recorder` keeps what voice-recv delivers; `frames_lost(user, recorder)` compares it with what the
  user sent (lost = missing or concealed, garbled = wrong Opus). `bot_said(kid)` is what the bot sent, decoded as
  that kid's client would.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import davey
import discord
import discord.opus
import nacl.secret
import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from discord.ext import voice_recv
from discord.ext.voice_recv import rtp as vr_rtp
from discord.ext.voice_recv.reader import PacketDecryptor
from discord.gateway import DiscordVoiceWebSocket
from nacl.exceptions import CryptoError

from bot.audio.dave import OPUS_SILENCE, DaveVoiceRecvClient
from tests.fake_voice_server import MODE, FakeVoiceServer, client_ssl_context
from tests.helpers import FakeMainGateway

GUILD_ID, CHANNEL_ID, BOT_ID = 1, 900_000_000_000_000_002, 111
SPEAKER_ID, SPEAKER_SSRC, BOT_SSRC = 222, 2002, 1001
INVALID_OPUS = b"\xfb\x00"  # TOC code 3 with a frame count of 0: libopus reports "corrupted stream"
VOICE_FRAMES = 400  # 8 s of voice per remote user; a stream longer than that wraps around
APPEND = davey.ProposalsOperationType.append
#: the ReceiveStats counters one of which every counted datagram ends in
OUTCOMES = ("decrypted", "passed_silence", "passed_plain", "concealed", "dropped_unknown_ssrc", "dropped_malformed")

#: after each protocol step of a transition: `await between(step_name)`
Between = Callable[[str], Awaitable[None]]
SwitchAt = Literal["execute", "commit"]

if not discord.opus.is_loaded():
    discord.opus._load_default()


async def _no_frames(_step: str) -> None:
    return None


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
    """RFC 9420 ExternalSender plus Add/Remove proposals signed as external sender 0 (what Discord's server does)."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        public = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.package = _vector(public) + struct.pack(">H", 1) + _vector(b"fake-voice-server")

    def add_proposal(self, key_package: bytes, channel_id: int, epoch: int) -> bytes:
        """An MLSMessage(PublicMessage) proposing to add `key_package` to the channel's group."""
        return self._proposal(struct.pack(">H", 1) + key_package, channel_id, epoch)

    def remove_proposal(self, leaf_index: int, channel_id: int, epoch: int) -> bytes:
        """An MLSMessage(PublicMessage) proposing to remove the member at `leaf_index`."""
        return self._proposal(struct.pack(">HI", 3, leaf_index), channel_id, epoch)

    def _proposal(self, proposal: bytes, channel_id: int, epoch: int) -> bytes:
        framed = (
            _vector(channel_id.to_bytes(8, "big"))  # DAVE group id = channel id, u64 big-endian
            + struct.pack(">Q", epoch)
            + bytes([2]) + struct.pack(">I", 0)  # sender: external, index 0
            + _vector(b"")  # authenticated_data
            + bytes([2])  # content_type: proposal
            + proposal
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


_voices: dict[float, list[bytes]] = {}


def voice_of(freq: float) -> list[bytes]:
    """`VOICE_FRAMES` Opus frames of a tone at `freq` (cached: encoding is the slow part)."""
    if freq not in _voices:
        _voices[freq] = encode_opus(sine_frames(VOICE_FRAMES, freq=freq))
    return _voices[freq]


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
    """A remote client's stream: DAVE session (None = not in the group), RTP sequence, timestamp and nonce.

    `dave` is whether it currently sends DAVE frames (False after a downgrade). `sent` maps the sequence number of
    every good frame it built to the plain Opus inside, for loss accounting. `voice` is what `speak()` says.
    """

    user_id: int
    ssrc: int
    transport_key: bytes
    session: davey.DaveSession | None = None
    seq: int = 100
    ts: int = 48_000
    counter: int = 1
    dave: bool = True
    voice: list[bytes] = field(default_factory=list)
    sent: dict[int, bytes] = field(default_factory=dict)
    pending_commit: bytes | None = None  # applied at op 22 when the harness models spec-following senders
    _spoken: int = 0

    def _next(self, payload: bytes, *, padding: int = 0, padding_count: int | None = None,
              advance: bool = True) -> bytes:
        datagram = rtp_datagram(self.seq, self.ts, self.ssrc, payload, self.transport_key, self.counter,
                                padding=padding, padding_count=padding_count)
        self.counter += 1
        if advance:
            self.seq, self.ts = (self.seq + 1) & 0xFFFF, (self.ts + 960) & 0xFFFFFFFF
        return datagram

    def encrypt(self, opus: bytes) -> bytes:
        """DAVE-encrypt like the client does (silence stays plain); plain Opus without a session or when downgraded."""
        if self.session is None or not self.dave or opus == OPUS_SILENCE:
            return opus
        return self.session.encrypt_opus(opus)

    def frame(self, opus: bytes, *, padding: int = 0) -> bytes:
        """The next good datagram in the stream."""
        self.sent[self.seq] = opus
        return self._next(self.encrypt(opus), padding=padding)

    def speak(self, frames: int = 1) -> list[bytes]:
        """The next `frames` datagrams of this user's voice."""
        datagrams = []
        for _ in range(frames):
            datagrams.append(self.frame(self.voice[self._spoken % len(self.voice)]))
            self._spoken += 1
        return datagrams

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

    def sent_in_order(self) -> list[bytes]:
        """The plain Opus of every good frame sent, in sequence order."""
        return [self.sent[seq] for seq in sorted(self.sent)]


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


@dataclass
class Loss:
    """How a user's sent frames fared: `lost` never arrived or arrived concealed; `garbled` reached Opus wrong."""

    sent: int
    lost: list[int]
    garbled: list[int]

    @property
    def total(self) -> int:
        return len(self.lost) + len(self.garbled)


def frames_lost(user: RemoteUser, recorder: Recorder) -> Loss:
    """Compare what `user` sent with what reached the sink, by sequence number.

    The newest frame is left out: voice-recv's jitter buffer releases a frame only when the next one arrives.
    A frame is lost if it never reached the sink or reached it concealed (no Opus), garbled if its Opus differs
    from what was sent (for instance still DAVE-encrypted).
    """
    got = {f.sequence: f.opus for f in recorder.of(user.ssrc)}
    counted = sorted(user.sent)[:-1]
    lost = [seq for seq in counted if got.get(seq) is None]
    garbled = [seq for seq in counted if got.get(seq) is not None and got[seq] != user.sent[seq]]
    return Loss(len(counted), lost, garbled)


@dataclass
class _BotVoice:
    """One kid's client decoding what the bot sends to one server."""

    decryptor: PacketDecryptor
    decoder: discord.opus.Decoder = field(default_factory=discord.opus.Decoder)
    pcm: list[tuple[int, bytes]] = field(default_factory=list)  # (packet index, decoded PCM)
    read: int = 0


def _member_data(user_id: int, *, bot: bool = False) -> dict:
    return {"user": {"id": str(user_id), "username": f"user{user_id}", "discriminator": "0", "avatar": None,
                     "bot": bot, "global_name": f"Kid {user_id}"},
            "roles": [], "joined_at": None, "deaf": False, "mute": False, "flags": 0}


class VoiceServerHarness:
    """The bot in a DAVE call with remote kids: discord.py's real connect path against a `FakeVoiceServer`.

    `parties` are the remote members of the call's MLS group, in join order; `speaker` is the first. `server` is
    the voice server the call is on now (`move()` changes it); `servers` every one it has been on.
    """

    def __init__(self, client: discord.Client, guild: discord.Guild, channel: discord.VoiceChannel, *,
                 switch_at: SwitchAt = "execute") -> None:
        self.client, self.guild, self.channel = client, guild, channel
        self.switch_at: SwitchAt = switch_at
        self.external_sender = FakeExternalSender()
        self.parties: list[RemoteUser] = []
        self.servers: list[FakeVoiceServer] = []
        self.main_gateway = FakeMainGateway(self._answer_voice_state)
        self._bot_channel: int | None = None
        self._transition_ids = itertools.count(7)
        self._syncs = itertools.count(1)
        self._synced: set[str] = set()
        self._sync_event = asyncio.Event()
        self._bot_voice: dict[tuple[int, bytes, int], _BotVoice] = {}
        self.server: FakeVoiceServer
        self.vc: DaveVoiceRecvClient
        self.speaker: RemoteUser

    @classmethod
    async def start(cls, client_cls: type[voice_recv.VoiceRecvClient] = DaveVoiceRecvClient, *, parties: int = 1,
                    switch_at: SwitchAt = "execute", connect_timeout: float = 10.0) -> VoiceServerHarness:
        """Connect `client_cls` the way `channel.connect()` does, into a call with `parties` kids in one DAVE group.

        The first kid (`SPEAKER_ID`) creates the group with the bot (epoch 1); the others join after that, each in
        its own transition, as Discord does when they arrive one by one.
        """
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
        guild._add_member(discord.Member(data=_member_data(BOT_ID, bot=True), guild=guild, state=state))
        state._add_guild(guild)
        # discord.py's HTTP session (what dials the voice websocket), trusting the fake servers' certificate
        client.http._HTTPClient__session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl_context()))
        harness = cls(client, guild, channel, switch_at=switch_at)
        client.ws = harness.main_gateway
        harness.server = await harness._new_server()
        harness.vc = await harness._connect(client_cls, connect_timeout)
        harness.speaker = harness.add_remote_user(SPEAKER_ID, SPEAKER_SSRC, session=harness._new_session(SPEAKER_ID))
        harness.parties.append(harness.speaker)
        await harness._welcome_bot()
        assert harness.vc._connection.can_encrypt, "DAVE handshake did not complete"
        await harness.map_ssrc(SPEAKER_ID, SPEAKER_SSRC)
        for n in range(1, parties):
            await harness.join(SPEAKER_ID + n, SPEAKER_SSRC + n)
        return harness

    async def _new_server(self) -> FakeVoiceServer:
        server = await FakeVoiceServer(bot_ssrc=BOT_SSRC).start()
        self.servers.append(server)
        return server

    async def _connect(self, client_cls: type[voice_recv.VoiceRecvClient], limit: float) -> DaveVoiceRecvClient:
        """What `VoiceChannel.connect(cls=client_cls)` does, with the connection's hook observed for `sync()`."""
        vc = client_cls(self.client, self.channel)
        self.client._connection._add_voice_client(GUILD_ID, vc)
        inner = vc._connection.hook

        async def observed(ws: DiscordVoiceWebSocket, msg: dict) -> None:
            if inner is not None:
                await inner(ws, msg)
            data = msg.get("d")
            if msg.get("op") == 6 and isinstance(data, dict) and str(data.get("t", "")).startswith("sync-"):
                self._synced.add(data["t"])
                self._sync_event.set()

        vc._connection.hook = observed
        await vc.connect(timeout=limit, reconnect=True, self_deaf=False, self_mute=False)
        return vc  # type: ignore[return-value]

    async def _answer_voice_state(self, guild_id: int, channel_id: int | None, self_mute: bool,
                                  self_deaf: bool) -> None:
        """Discord's replies to the bot's op 4: VOICE_STATE_UPDATE, and VOICE_SERVER_UPDATE when it (re)joins.

        A voice state update for the channel the bot is already in changes nothing on Discord's side, so only the
        VOICE_STATE_UPDATE comes back (no new voice server or token).
        """
        await asyncio.sleep(0.005)
        state = self.client._connection
        rejoin = channel_id is not None and channel_id != self._bot_channel
        self._bot_channel = channel_id
        state.parse_voice_state_update({
            "guild_id": str(guild_id), "channel_id": str(channel_id) if channel_id else None, "user_id": str(BOT_ID),
            "session_id": "main-gateway-session", "deaf": False, "mute": False, "self_deaf": self_deaf,
            "self_mute": self_mute, "self_video": False, "suppress": False, "request_to_speak_timestamp": None,
            "member": _member_data(BOT_ID, bot=True)})
        if rejoin:
            state.parse_voice_server_update({"token": self.server.token, "guild_id": str(guild_id),
                                             "endpoint": self.server.endpoint})

    @property
    def transport_key(self) -> bytes:
        return self.server.transport_key

    def add_remote_user(self, user_id: int, ssrc: int, *, session: davey.DaveSession | None = None,
                        bot: bool = False) -> RemoteUser:
        """A guild member with an RTP stream; without `session` its frames are plain Opus (undecryptable here)."""
        self.guild._add_member(discord.Member(data=_member_data(user_id, bot=bot), guild=self.guild,
                                              state=self.client._connection))
        voice = voice_of(200.0 + 20.0 * (user_id % 50))  # a pitch of its own, so mixes can be told apart
        return RemoteUser(user_id, ssrc, self.transport_key, session=session, voice=voice)

    def _new_session(self, user_id: int) -> davey.DaveSession:
        session = davey.DaveSession(1, user_id, CHANNEL_ID)
        session.set_external_sender(self.external_sender.package)
        session.get_serialized_key_package()  # readies its pending group, as a client does on op 4
        return session

    async def bot_key_package(self, *, after: int = 0) -> bytes:
        """The newest key package discord.py sent (op 26), once it has sent more than `after` of them."""
        return (await self.server.wait_for(lambda: self.server.binary_ops(26)[after:]))[-1]

    def _epoch(self) -> int:
        first = self.parties[0].session if self.parties else None
        return first.epoch if first is not None and first.epoch is not None else 0

    # ---- the voice gateway's messages ---------------------------------------------------------------------------

    async def sync(self) -> None:
        """Return once discord.py has handled everything sent so far (a HEARTBEAT_ACK its hook reports back)."""
        nonce = f"sync-{next(self._syncs)}"
        await self.server.send_json(6, {"t": nonce})
        async with asyncio.timeout(5.0):
            while nonce not in self._synced:
                self._sync_event.clear()
                await self._sync_event.wait()

    async def gateway(self, op: int, data: dict) -> None:
        """One JSON op from the voice server, handled by discord.py (and the voice client's hook) on return."""
        await self.server.send_json(op, data)
        await self.sync()

    async def binary(self, op: int, payload: bytes) -> None:
        """One binary DAVE op (25, 27, 29, 30) from the voice server, handled by discord.py on return."""
        await self.server.send_binary(op, payload)
        await self.sync()

    async def map_ssrc(self, user_id: int, ssrc: int) -> None:
        """op 5 SPEAKING: what tells voice-recv whose SSRC it is."""
        await self.gateway(5, {"user_id": str(user_id), "ssrc": ssrc, "speaking": 1})

    async def _expect_ready(self, transition_id: int) -> None:
        await self.server.wait_for(lambda: transition_id in [d["transition_id"] for d in self.server.json_ops(23)])

    # ---- changes in the call, driven as Discord's voice server drives them --------------------------------------

    async def _welcome_bot(self) -> None:
        """The bot (just identified, key package sent) is added to the kids' group: op 25, welcome (op 30), op 22.

        The first kid commits the Add; a lone kid's commit creates the group with the bot (epoch 1).
        """
        key_package = await self.bot_key_package()
        await self.binary(25, self.external_sender.package)
        proposals = self.external_sender.proposals_payload(
            self.external_sender.add_proposal(key_package, CHANNEL_ID, self._epoch()))
        commits = [kid.session.process_proposals(APPEND, proposals) for kid in self.parties]
        for kid in self.parties:
            kid.session.process_commit(commits[0].commit)
        transition = next(self._transition_ids)
        await self.binary(30, struct.pack(">H", transition) + commits[0].welcome)
        await self._expect_ready(transition)
        await self.gateway(22, {"transition_id": transition})

    async def join(self, user_id: int, ssrc: int, *, between: Between = _no_frames) -> RemoteUser:
        """A kid joins: op 11, Add proposal (op 27), the winning commit (op 29) and welcome, op 22, then op 5.

        The group's first member wins the commit, as the server takes the first valid one it sees.
        """
        kid = self.add_remote_user(user_id, ssrc)
        session = self._new_session(user_id)
        key_package = session.get_serialized_key_package()
        await self.gateway(11, {"user_ids": [str(user_id)]})
        proposals = self.external_sender.proposals_payload(
            self.external_sender.add_proposal(key_package, CHANNEL_ID, self._epoch()))
        winner = await self._propose(proposals, between)
        transition = next(self._transition_ids)
        await self._announce_commit(winner.commit, transition, between)
        session.process_welcome(winner.welcome)
        kid.session = session
        await between("welcomed")
        await self._execute(transition, between)
        self.parties.append(kid)
        await self.map_ssrc(user_id, ssrc)
        return kid

    async def leave(self, kid: RemoteUser, *, between: Between = _no_frames) -> None:
        """A kid leaves: op 13, Remove proposal (op 27), the winning commit (op 29), op 22."""
        self.parties.remove(kid)
        await self.gateway(13, {"user_id": str(kid.user_id)})
        await between("disconnected")
        assert kid.session is not None and kid.session.own_leaf_index is not None
        proposals = self.external_sender.proposals_payload(
            self.external_sender.remove_proposal(kid.session.own_leaf_index, CHANNEL_ID, self._epoch()))
        winner = await self._propose(proposals, between)
        transition = next(self._transition_ids)
        await self._announce_commit(winner.commit, transition, between)
        await self._execute(transition, between)

    async def downgrade(self, *, between: Between = _no_frames) -> None:
        """The call drops E2EE: op 21 to protocol 0 (discord.py answers op 23), then op 22.

        Kids send plain Opus from the execute (or from the prepare, with `switch_at="commit"`).
        """
        transition = next(self._transition_ids)
        await self.gateway(21, {"transition_id": transition, "protocol_version": 0})
        await self._expect_ready(transition)
        if self.switch_at == "commit":
            for kid in self.parties:
                kid.dave = False
        await between("prepared")
        await self.gateway(22, {"transition_id": transition})
        for kid in self.parties:
            kid.dave = False
        await between("executed")

    async def upgrade(self, *, between: Between = _no_frames) -> None:
        """The call returns to DAVE: op 24 (epoch 1: everyone builds a new group), op 25, op 27, welcome, op 22.

        Kids keep sending plain Opus until the execute (or from their own new group, with `switch_at="commit"`).
        The first kid's commit creates the group; the bot and the other kids are welcomed into it.
        """
        transition = next(self._transition_ids)
        key_packages_before = len(self.server.binary_ops(26))
        await self.gateway(24, {"transition_id": transition, "epoch": 1, "protocol_version": 1})
        bot_key_package = await self.bot_key_package(after=key_packages_before)
        for kid in self.parties:
            assert kid.session is not None
            kid.session.reinit(1, kid.user_id, CHANNEL_ID)
        key_packages = {kid.user_id: kid.session.get_serialized_key_package() for kid in self.parties}
        await between("prepared")
        await self.binary(25, self.external_sender.package)
        for kid in self.parties:
            kid.session.set_external_sender(self.external_sender.package)
        add = self.external_sender.add_proposal
        bot_view = [add(key_packages[kid.user_id], CHANNEL_ID, 0) for kid in self.parties]
        await self.binary(27, bytes([0]) + self.external_sender.proposals_payload(*bot_view))  # its commit loses
        creator, *others = self.parties
        creator_view = [add(bot_key_package, CHANNEL_ID, 0)] + [
            add(key_packages[kid.user_id], CHANNEL_ID, 0) for kid in others]
        created = creator.session.process_proposals(APPEND, self.external_sender.proposals_payload(*creator_view))
        creator.session.process_commit(created.commit)
        for kid in others:
            kid.session.process_welcome(created.welcome)
        if self.switch_at == "commit":
            for kid in self.parties:
                kid.dave = True
        await between("group_created")
        await self.binary(30, struct.pack(">H", transition) + created.welcome)
        await self._expect_ready(transition)
        await between("welcomed")
        await self.gateway(22, {"transition_id": transition})
        for kid in self.parties:
            kid.dave = True
        await between("executed")

    async def move(self, *, between: Between = _no_frames) -> FakeVoiceServer:
        """Discord moves the call to another voice server: VOICE_SERVER_UPDATE (new endpoint and token) mid-call.

        discord.py closes its voice websocket (4014), connects to the new endpoint (IDENTIFY, READY, IP discovery
        over its UDP socket, SESSION_DESCRIPTION with a new key, a DAVE session re-initialised) while staying in the
        channel. The kids move too, and are there first: new SSRCs, the new transport key, a fresh MLS group among
        them, which the bot is then welcomed into; then their op 5s.
        """
        old = self.server
        self.server = await self._new_server()
        self.client._connection.parse_voice_server_update({
            "token": self.server.token, "guild_id": str(GUILD_ID), "endpoint": self.server.endpoint})
        await between("server_update")
        self._regroup_kids()
        await self._welcome_bot()
        for kid in self.parties:
            await self.map_ssrc(kid.user_id, kid.ssrc)
        await between("rejoined")
        await old.stop()
        return self.server

    def _regroup_kids(self) -> None:
        """The kids on a new voice server: new SSRCs and transport key, and a new MLS group of their own."""
        for kid in self.parties:
            kid.ssrc += 100
            kid.transport_key = self.server.transport_key
            assert kid.session is not None
            kid.session.reinit(1, kid.user_id, CHANNEL_ID)
            kid.session.set_external_sender(self.external_sender.package)
        creator, *others = self.parties
        if others:
            key_packages = [kid.session.get_serialized_key_package() for kid in others]
            created = creator.session.process_proposals(APPEND, self.external_sender.proposals_payload(
                *[self.external_sender.add_proposal(kp, CHANNEL_ID, 0) for kp in key_packages]))
            creator.session.process_commit(created.commit)
            for kid in others:
                kid.session.process_welcome(created.welcome)
        else:
            creator.session.get_serialized_key_package()

    async def welcome_back(self, *, key_packages_before: int) -> None:
        """The bot identified again (a fresh connection after a refused resume or a dropped socket) and sent key
        package number `key_packages_before + 1`: the kids regroup, welcome it, and announce their new SSRCs."""
        await self.server.wait_for(lambda: len(self.server.binary_ops(26)) > key_packages_before, within=15.0)
        self._regroup_kids()
        await self._welcome_bot()
        for kid in self.parties:
            await self.map_ssrc(kid.user_id, kid.ssrc)

    async def crash(self, code: int = 4015, *, between: Between = _no_frames) -> None:
        """The voice server's websocket goes away with `code` (4015: "voice server crashed"); UDP keeps flowing.

        `between("closed")` runs while the bot has no voice websocket (messages sent then wait for a resume);
        returns when the bot has resumed (op 7 accepted) and caught up.
        """
        resumes = len(self.server.resumes)
        await self.server.close(code)
        await between("closed")
        await self.server.wait_for(lambda: self.server.resumes[resumes:], within=10.0)
        await self.sync()
        await between("resumed")

    async def _propose(self, proposals: bytes, between: Between) -> davey.CommitWelcome:
        """op 27 to every member; every member commits; the first kid's commit wins."""
        await self.binary(27, bytes([0]) + proposals)
        commits = [kid.session.process_proposals(APPEND, proposals) for kid in self.parties]
        await between("proposed")
        return commits[0]

    async def _announce_commit(self, commit: bytes, transition: int, between: Between) -> None:
        """op 29 to the members. Kids following the whitepaper apply it at op 22; davey-style kids at once."""
        for kid in self.parties:
            if self.switch_at == "commit":
                kid.session.process_commit(commit)
            else:
                kid.pending_commit = commit
        if self.switch_at == "commit":
            await between("members_committed")  # their new-epoch frames can overtake the bot's op 29
        await self.binary(29, struct.pack(">H", transition) + commit)
        await self._expect_ready(transition)
        await between("committed")

    async def _execute(self, transition: int, between: Between) -> None:
        await self.gateway(22, {"transition_id": transition})
        for kid in self.parties:
            if kid.pending_commit is not None:
                kid.session.process_commit(kid.pending_commit)
                kid.pending_commit = None
        await between("executed")

    # ---- UDP ------------------------------------------------------------------------------------------------------

    def send(self, datagrams: Iterable[bytes]) -> int:
        """Relay datagrams to the bot's voice socket from the current voice server; returns how many."""
        sent = 0
        for datagram in datagrams:
            self.server.send_rtp(datagram)
            sent += 1
        return sent

    async def send_paced(self, datagrams: Iterable[bytes], pace: float = 0.002) -> None:
        """Send with a small gap between datagrams (the receive path is threaded; bursts can overrun buffers)."""
        for datagram in datagrams:
            self.send([datagram])
            await asyncio.sleep(pace)

    async def speak(self, kids: Iterable[RemoteUser], frames: int = 1, pace: float = 0.002) -> None:
        """Each of `kids` says its next `frames` frames, interleaved as simultaneous talkers are."""
        kids = list(kids)
        for _ in range(frames):
            await self.send_paced([d for kid in kids for d in kid.speak()], pace)

    def bot_said(self, listener: RemoteUser, *, since: int = 0) -> list[bytes]:
        """What the bot sent to the current server from its `since`-th packet on, as `listener`'s client hears it.

        Each voice packet is transport-decrypted with the server's key and DAVE-decrypted with the kid's session
        (once: DAVE refuses a nonce it has seen, as it should); packets that fail either (before DAVE was ready,
        or sent with another server's key) are left out.
        """
        key = (id(self.server), self.server.transport_key, listener.user_id)  # a new session has a new key
        heard = self._bot_voice.setdefault(key, _BotVoice(PacketDecryptor(MODE, self.server.transport_key)))
        for index in range(heard.read, len(self.server.rtp_from_bot)):
            try:
                opus = bytes(heard.decryptor.decrypt_rtp(vr_rtp.decode_rtp(self.server.rtp_from_bot[index])))
                assert listener.session is not None
                plain = listener.session.decrypt(BOT_ID, davey.MediaType.audio, opus)
                heard.pcm.append((index, heard.decoder.decode(plain, fec=False)))
            except (CryptoError, ValueError):
                pass
        heard.read = len(self.server.rtp_from_bot)
        return [pcm for index, pcm in heard.pcm if index >= since]

    async def settled(self, datagrams: int, within: float = 3.0) -> dict[str, int | float | None]:
        """Until the bot's reader has counted `datagrams` datagrams and each has reached its outcome; the stats.

        Wait for this before asserting counts: voice-recv's jitter buffer may hand a frame to the sink before the
        next datagram has been routed (and counted), so "the sink has N frames" does not mean the counts are final.
        """
        def ended() -> bool:
            stats = self.vc.receive_stats.snapshot()
            outcomes = sum(stats[name] for name in OUTCOMES)  # type: ignore[misc]
            return stats["packets_received"] == datagrams and outcomes == datagrams
        assert await self.wait_until(ended, within), f"not settled at {datagrams}: {self.vc.receive_stats.snapshot()}"
        return self.vc.receive_stats.snapshot()

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
        """Leave the call the way discord.py does, stop the servers, close the HTTP session."""
        vc = self.vc
        if vc.is_listening():
            vc.stop_listening()
        if self.client._connection._get_voice_client(GUILD_ID) is vc:  # not left yet (a test may have)
            try:
                async with asyncio.timeout(3.0):
                    await vc.disconnect(force=True)
            except Exception:
                vc.cleanup()
        for server in self.servers:
            await server.stop()
        await self.client.http.close()
        await asyncio.sleep(0.05)  # let reader-stopper threads run their after() callbacks

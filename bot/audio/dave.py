"""Receive DAVE (end-to-end encrypted) Discord voice with discord-ext-voice-recv: the one shim into library internals.

voice-recv 0.5.2a179 predates DAVE: after its transport decryption the Opus payload is still DAVE-encrypted, the first
such frame raises `OpusError` in its decoder and the router thread dies (the bot goes deaf without a sign). This module
adds the DAVE step and fixes the upstream faults that would otherwise kill receive. Everything private it relies on is
listed here and checked by `shim_compatibility_problems()`; a test asserts that list is empty, so an upgrade of
discord.py or voice-recv fails loudly instead of silently deafening the bot (`vr/` = discord/ext/voice_recv/,
`dpy/` = discord/, versions discord.py 2.7.1 and voice-recv 0.5.2a179):

* `PacketRouter.feed_rtp(packet)` (vr/router.py:41) — overridden: called by `AudioReader.callback` (vr/reader.py:182)
  on discord.py's socket thread after transport decryption and header-extension removal, before the jitter buffer.
  Buffered payloads must already be plain Opus because the decoder's FEC path peeks the next one (vr/opus.py:157-168).
  Anything raised here stops the reader (vr/reader.py:183-186), so nothing escapes.
* `PacketRouter.get_decoder` / `_lock` / `decoders` (vr/router.py:58-64) — re-implemented to build `SafePacketDecoder`.
  `PacketRouter.destroy_decoder` (vr/router.py:80-85, called by the hook on op 13) — extended to drop frames of that
  stream still waiting for a key; `_end_thread` (vr/router.py:38) tells the hold timer the router has stopped.
  `PacketRouter.run` / `_do_run` / `waiter` (vr/router.py:96-113) — `run` re-implemented so a router thread that ends
  after `listen()` was called again does not stop the new reader (upstream stops whatever reader is current).
* `PacketDecoder._decode_packet` (vr/opus.py:149-172) — wrapped: an `OpusError` (a frame that decrypts but is not
  valid Opus) or any other decoder error would end the router thread (vr/router.py:96-113) and with it listening for
  everybody.
* `AudioReader.packet_router`, `.keepalive`, `.decryptor.decrypt_rtp`, `.callback` (vr/reader.py:45-60, 136-186) — the
  router is swapped before `start()`; `UDPKeepAlive.delay` is 5000 *seconds* upstream (vr/reader.py:386,419);
  transport decrypt failures are counted by wrapping the per-instance `decrypt_rtp` (bound at vr/reader.py:200).
* `RTPPacket.padding` / `.decrypted_data` (vr/rtp.py:173, 184) — padding is parsed but never stripped (vr/rtp.py:203).
* `vc._connection.dave_session` / `.dave_protocol_version` / `.dave_downgraded` (dpy/voice_state.py:219-222) — read
  for every packet: discord.py re-initialises the session in place, may downgrade to protocol 0 with a stale group,
  and sets the protocol version to 1 at op 24 while kids send plain Opus until op 22; only `dave_downgraded`
  (cleared by the upgrade's op 22, dpy/voice_state.py:316-320) says an upgrade is still pending. davey's
  `DaveSession.status` (pending / awaiting_response) says an MLS message with new keys is on its way.
* `vc._get_id_from_ssrc`, `_id_to_ssrc`, `_ssrc_to_id`, `_reader` (vr/voice_client.py:40-43, 118-135) — SSRC → user.
  `_add_ssrc` (vr/voice_client.py:118-123) is extended: a stream that changes hands (an SSRC re-announced for someone
  else, or a kid announced with a new SSRC without an op 13) gets a fresh decoder. On op 13 the hook dispatches
  `voice_member_disconnect` (vr/gateway.py:98-108), which `TutorSink` listens for to free that kid's stream.
* voice-recv's gateway `hook` (vr/gateway.py:49) passed as `VoiceConnectionState(hook=...)` (dpy/voice_state.py:198) —
  wrapped, because discord.py awaits it in `received_message` (dpy/gateway.py:1032) and its poller task only survives
  ConnectionClosed/Timeout (dpy/voice_state.py:672-674): any other exception silently ends heartbeats and DAVE
  transitions while `is_connected()` stays True. `_remove_ssrc` is fixed: upstream dereferences `_reader` even when not
  listening, so op 13 (a user leaves) before `listen()` raised `AttributeError` (vr/voice_client.py:125-129).
* `VoiceConnectionState` is subclassed (`DaveVoiceConnectionState`): `_connect(..., resume=True)`, which discord.py
  calls on close code 4015 (dpy/voice_state.py:715-732), really resumes — a new `DiscordVoiceWebSocket` from
  `from_connection_state(resume=True, seq_ack=...)` polled until op 9 RESUMED, with `token` / `session_id` /
  `secret_key` / `ws` as they were — and falls back to `disconnect(cleanup=False)` + a fresh connect. Its
  `SocketReader` (dpy/voice_state.py:86-176, `_do_run` over `state.socket`, `_callbacks`, `_running`, `_end`) is
  replaced by one that selects for 0.25 s instead of 30 s, so a UDP socket discord.py replaces is noticed.
* `AudioReader._is_ip_discovery_packet` (vr/reader.py:133) — discovery answers are not counted as RTP.
* The `discord.ext.voice_recv.reader` logger gets a filter: it logs transport garbage at ERROR once per packet
  (vr/reader.py:149-158, 178); the shim counts those, so one line per interval is enough.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import davey
import discord
import discord.opus
from discord.errors import ConnectionClosed
from discord.ext import voice_recv
from discord.ext.voice_recv import rtp as vr_rtp
from discord.ext.voice_recv.gateway import hook as voice_recv_hook
from discord.ext.voice_recv.opus import PacketDecoder
from discord.ext.voice_recv.reader import AudioReader, PacketDecryptor, UDPKeepAlive
from discord.ext.voice_recv.router import PacketRouter
from discord.gateway import DiscordVoiceWebSocket
from discord.voice_state import SocketReader, VoiceConnectionState
from nacl.exceptions import CryptoError

from bot.audio.formats import DISCORD_FRAME_BYTES

log = logging.getLogger(__name__)

OPUS_SILENCE = b"\xf8\xff\xfe"  # clients send it unencrypted; davey raises on it for users it has no key for
SILENCE_PCM = bytes(DISCORD_FRAME_BYTES)
RTP_HEADER_BYTES = 12
KEEPALIVE_SECONDS = 5
LOG_EVERY_SECONDS = 10.0  # per-packet failures are counted always, logged at most this often
DAVE_MAGIC = b"\xfa\xfa"  # the last two bytes of every DAVE frame (daveprotocol.com, "Payload Format")
DAVE_TAG_BYTES = 8
DAVE_MIN_TRAILER = DAVE_TAG_BYTES + 1 + 1 + 2  # tag, a 1-byte nonce, the size byte, the marker
HOLD_SECONDS = 0.15  # how long a DAVE frame may wait for the MLS message that brings its key
HOLD_MAX_FRAMES = 8  # per stream; beyond that the oldest waiting frame is concealed
SOCKET_SELECT_SECONDS = 0.25  # how soon the UDP reader notices that discord.py replaced its socket
_AWAITING_KEYS = (davey.SessionStatus.pending, davey.SessionStatus.awaiting_response)
_CONCEAL = object()  # feed the packet with no payload: the Opus decoder conceals it (PLC)
_HOLD = object()  # the key for this frame is probably in an MLS message discord.py has not processed yet

AfterCallback = Callable[[Exception | None], Any]


@dataclass
class ReceiveStats:
    """Counters for one voice connection, written by voice-recv's threads and read by the conversation.

    `packets_received` counts RTP datagrams reaching the reader; each ends in exactly one of `decrypted`,
    `passed_silence`, `passed_plain` (plain Opus accepted: not an E2EE call, downgraded, an upgrade not yet
    executed, or davey's passthrough window), `concealed`, `dropped_unknown_ssrc` or `dropped_malformed` (voice-recv
    itself skips silence from unknown SSRCs before the shim sees it). `held` counts DAVE frames that first waited for
    the MLS message carrying their key (each still ends decrypted or concealed). `opus_errors` counts frames the
    decoder rejected after a successful decrypt (replaced by silence).
    """

    packets_received: int = 0
    decrypted: int = 0
    passed_silence: int = 0
    passed_plain: int = 0
    concealed: int = 0
    held: int = 0
    dropped_unknown_ssrc: int = 0
    dropped_malformed: int = 0
    opus_errors: int = 0
    last_decrypt_ok_at: float | None = None
    failing_since: float | None = None  # first failure (session ready) since the last success
    last_failure_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, name: str) -> None:
        """Add one to counter `name`."""
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def record_decrypt(self, ok: bool, *, session_ready: bool, now: float | None = None) -> None:
        """Track the failure streak behind `all_failing_for` (failures while not ready are expected windows)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if ok:
                self.decrypted += 1
                self.last_decrypt_ok_at = now
                self.failing_since = None
                return
            self.concealed += 1
            if not session_ready:
                self.failing_since = None
                return
            if self.failing_since is None:
                self.failing_since = now
            self.last_failure_at = now

    def all_failing_for(self, seconds: float) -> bool:
        """True when every decrypt has failed for `seconds` of traffic while the session was ready: reconnect voice."""
        with self._lock:
            if self.failing_since is None or self.last_failure_at is None:
                return False
            return self.last_failure_at - self.failing_since >= seconds

    def snapshot(self) -> dict[str, int | float | None]:
        """A consistent copy of the public fields, for logs and /tutor status."""
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class _Throttle:
    """Allows one log line per `interval` seconds; per-packet failures would otherwise flood the log."""

    def __init__(self, interval: float = LOG_EVERY_SECONDS) -> None:
        self._interval = interval
        self._next_at = 0.0

    def ready(self) -> bool:
        now = time.monotonic()
        if now < self._next_at:
            return False
        self._next_at = now + self._interval
        return True


def has_dave_trailer(frame: bytes) -> bool:
    """True when `frame` ends in a well-formed DAVE trailer: 8-byte tag, ULEB128 nonce and ranges, size, 0xFAFA.

    Checking the structure, not just the marker, keeps a plain Opus frame that happens to end in FA FA (1 in 65,536)
    from being taken for ciphertext.
    """
    if len(frame) < DAVE_MIN_TRAILER + 1 or frame[-2:] != DAVE_MAGIC:
        return False
    size = frame[-3]
    if not DAVE_MIN_TRAILER <= size < len(frame):
        return False
    fields, values, pos = frame[len(frame) - size + DAVE_TAG_BYTES:-3], 0, 0
    while pos < len(fields):
        end = pos
        while end < len(fields) and fields[end] & 0x80:
            end += 1
        if end == len(fields) or end - pos >= 5:  # runs past the trailer, or longer than a 32-bit value
            return False
        pos, values = end + 1, values + 1
    return values % 2 == 1  # the nonce, then (offset, length) pairs


@dataclass
class _Held:
    packet: vr_rtp.RTPPacket
    data: bytes
    deadline: float


class DavePacketRouter(PacketRouter):
    """voice-recv's router with the DAVE step in `feed_rtp`; never lets an exception escape.

    Which frames are plain and which are DAVE is decided per frame by its trailer, not by the call's protocol
    version: at every transition both kinds are in flight. DAVE frames are decrypted whenever the session can
    (also after a downgrade, for the ones still on the way) and never reach Opus encrypted; plain frames pass while
    the call is not E2EE or an upgrade has not been executed yet (discord.py's `dave_downgraded`, which stays set
    until op 22), otherwise davey decides (its passthrough window). A DAVE frame that fails while the session is
    waiting for an MLS message (a kid already in the new epoch, the bot not yet) waits up to HOLD_SECONDS and is
    retried, with the rest of its stream queued behind it so the jitter buffer still sees it in order.
    """

    def __init__(self, sink: voice_recv.AudioSink, reader: DaveAudioReader) -> None:
        super().__init__(sink, reader)
        self.stats: ReceiveStats = reader.stats
        self._error_log = _Throttle()
        self._held: dict[int, deque[_Held]] = {}  # per SSRC, under self._lock

    def feed_rtp(self, packet: vr_rtp.RTPPacket) -> None:
        """Decrypt DAVE, then hand plain Opus (or None = conceal) to voice-recv's jitter buffer."""
        try:
            with self._lock:
                if self._held:
                    self._release_held()
                self._route(packet)
        except Exception:
            self.stats.count("dropped_malformed")
            if self._error_log.ready():
                log.exception("dave.feed_failed", extra={"ssrc": getattr(packet, "ssrc", None)})

    def _route(self, packet: vr_rtp.RTPPacket) -> None:
        data = self._strip_padding(packet)
        if data is None:
            self.stats.count("dropped_malformed")
            return
        waiting = self._held.get(packet.ssrc)
        if waiting is not None:  # earlier frames of this stream wait for their key: stay in order behind them
            self._hold(waiting, packet, data)
            return
        outcome = self._dave_decrypt(packet, data)
        if outcome is _HOLD:
            self._hold(self._held.setdefault(packet.ssrc, deque()), packet, data)
            self._schedule_release()
            return
        self._push(packet, outcome)

    def _dave_decrypt(self, packet: vr_rtp.RTPPacket, data: bytes, *, may_hold: bool = True) -> bytes | object | None:
        """Plain Opus to feed, _CONCEAL, _HOLD, or None (drop); counts the outcome unless it is _HOLD."""
        if data == OPUS_SILENCE:
            self.stats.count("passed_silence")
            return data
        voice_client = self.reader.voice_client
        connection = voice_client._connection
        session = connection.dave_session
        protected = has_dave_trailer(data)
        if not protected and (session is None or connection.dave_protocol_version == 0
                              or connection.dave_downgraded):
            self.stats.count("passed_plain")  # not E2EE now, or an upgrade's plain frames before its op 22
            return data
        user_id = voice_client._get_id_from_ssrc(packet.ssrc)
        if user_id is None:  # no op 5 / op 12 for it yet, or a video SSRC: no decoder for it
            self.stats.count("dropped_unknown_ssrc")
            return None
        if session is None:
            return self._conceal(user_id, None, "no DAVE session")
        try:
            plain = session.decrypt(user_id, davey.MediaType.audio, data)
        except (ValueError, TypeError) as error:  # davey: ValueError("Failed to decrypt: ...") for every failure
            if may_hold and protected and session.status in _AWAITING_KEYS:
                return _HOLD
            return self._conceal(user_id, session, str(error))
        if protected:
            self.stats.record_decrypt(True, session_ready=True)
        else:
            self.stats.count("passed_plain")  # davey's passthrough window around a transition
        return plain

    def _conceal(self, user_id: int, session: davey.DaveSession | None, error: str) -> object:
        ready = bool(session is not None and session.ready)
        self.stats.record_decrypt(False, session_ready=ready)
        if self._error_log.ready():
            log.warning("dave.decrypt_failed", extra={"user_id": user_id, "ready": ready, "error": error})
        return _CONCEAL  # dropping would leave a gap whose flush also discards the next good packet

    def _push(self, packet: vr_rtp.RTPPacket, outcome: bytes | object | None) -> None:
        if outcome is None:
            return
        packet.decrypted_data = None if outcome is _CONCEAL else outcome
        super().feed_rtp(packet)

    def _hold(self, waiting: deque[_Held], packet: vr_rtp.RTPPacket, data: bytes) -> None:
        if len(waiting) >= HOLD_MAX_FRAMES:
            oldest = waiting.popleft()
            self._push(oldest.packet, self._dave_decrypt(oldest.packet, oldest.data, may_hold=False))
        waiting.append(_Held(packet, data, time.monotonic() + HOLD_SECONDS))
        self.stats.count("held")

    def _release_held(self) -> None:
        """Retry waiting frames in order; one whose wait is over is decrypted now or concealed."""
        now = time.monotonic()
        for ssrc in list(self._held):
            waiting = self._held[ssrc]
            while waiting:
                head = waiting[0]
                outcome = self._dave_decrypt(head.packet, head.data, may_hold=now < head.deadline)
                if outcome is _HOLD:
                    break
                waiting.popleft()
                self._push(head.packet, outcome)
            if not waiting:
                del self._held[ssrc]

    def _schedule_release(self) -> None:
        """Make sure waiting frames come out even if no further packet arrives to trigger the retry."""
        timer = threading.Timer(HOLD_SECONDS + 0.01, self._release_when_due)
        timer.daemon = True
        timer.start()

    def _release_when_due(self) -> None:
        try:
            with self._lock:
                if self._end_thread.is_set():
                    self._held.clear()
                    return
                self._release_held()
                still_waiting = bool(self._held)
            if still_waiting:
                self._schedule_release()
        except Exception:
            if self._error_log.ready():
                log.exception("dave.release_failed")

    def destroy_decoder(self, ssrc: int) -> None:
        """Upstream (vr/router.py:80-85), and frames of that stream still waiting for a key go too (op 13)."""
        with self._lock:
            self._held.pop(ssrc, None)
            super().destroy_decoder(ssrc)

    @staticmethod
    def _strip_padding(packet: vr_rtp.RTPPacket) -> bytes | None:
        """The payload as `bytes` (davey rejects bytearray) without RTP padding, or None when malformed."""
        data = packet.decrypted_data
        if not data:
            return None
        data = bytes(data)
        if packet.padding:
            pad = data[-1]
            if not 0 < pad < len(data):
                return None
            data = data[:-pad]
        return data

    def run(self) -> None:
        """Upstream `run` (vr/router.py:96-104), except it stops only its own reader.

        Upstream calls `voice_client.stop_listening()` when the thread ends; after `stop_listening()` + `listen()` the
        old thread ends late and would stop the *new* reader.
        """
        try:
            self._do_run()
        except Exception as error:
            log.exception("dave.router_died")
            self.reader.error = error
        finally:
            voice_client = self.reader.voice_client
            if voice_client._reader is self.reader:
                voice_client.stop_listening()
            self.waiter.clear()

    def get_decoder(self, ssrc: int) -> PacketDecoder:
        """Same as upstream (vr/router.py:58-64) but builds a SafePacketDecoder."""
        with self._lock:
            decoder = self.decoders.get(ssrc)
            if decoder is None:
                decoder = self.decoders[ssrc] = SafePacketDecoder(self, ssrc)
            return decoder


class SafePacketDecoder(PacketDecoder):
    """Turns a frame the Opus decoder rejects into 20 ms of silence and a fresh decoder, instead of a dead router."""

    def _decode_packet(self, packet: Any) -> tuple[Any, bytes]:
        try:
            return super()._decode_packet(packet)
        except Exception as error:
            router: DavePacketRouter = self.router  # type: ignore[assignment]
            router.stats.count("opus_errors")
            if router._error_log.ready():
                log.warning("dave.opus_error", extra={"ssrc": self.ssrc, "error": repr(error)})
            self._decoder = discord.opus.Decoder()
            return packet, SILENCE_PCM


class DaveAudioReader(AudioReader):
    """voice-recv's reader with the DAVE router, a working keepalive and counted transport failures."""

    def __init__(self, sink: voice_recv.AudioSink, voice_client: DaveVoiceRecvClient, *,
                 after: AfterCallback | None = None) -> None:
        self.stats: ReceiveStats = voice_client.receive_stats
        super().__init__(sink, voice_client, after=after)
        self.packet_router = DavePacketRouter(sink, self)  # the stock one was built but never started
        self.keepalive.delay = KEEPALIVE_SECONDS
        self.decryptor.decrypt_rtp = self._counting(self.decryptor.decrypt_rtp)

    def _counting(self, decrypt_rtp: Callable[[vr_rtp.RTPPacket], bytes]) -> Callable[[vr_rtp.RTPPacket], bytes]:
        stats = self.stats

        def decrypt(packet: vr_rtp.RTPPacket) -> bytes:
            try:
                return decrypt_rtp(packet)
            except CryptoError:  # upstream returns early for these; other errors still reach feed_rtp empty
                stats.count("dropped_malformed")
                raise

        return decrypt

    def callback(self, packet_data: bytes) -> None:
        """Count every RTP datagram; drop ones too short for a header before upstream logs a traceback."""
        if len(packet_data) >= 2 and vr_rtp.is_rtcp(packet_data):
            super().callback(packet_data)
            return
        if self._is_ip_discovery_packet(packet_data):  # discord.py's own answer on every (re)connect, not RTP
            return
        self.stats.count("packets_received")
        if len(packet_data) <= RTP_HEADER_BYTES:
            self.stats.count("dropped_malformed")
            return
        super().callback(packet_data)


class _PerPacketLogThrottle(logging.Filter):
    """voice-recv logs some failures once per packet (ERROR for transport garbage); pass each at most once per interval.

    The shim counts these in `ReceiveStats`, so the log only needs to say that they happen.
    """

    PER_PACKET_MESSAGES = ("CryptoError decoding packet data", "Error unpacking packet",
                           "Received packet for unknown ssrc %s:\n%s")

    def __init__(self) -> None:
        super().__init__()
        self._throttles = {message: _Throttle() for message in self.PER_PACKET_MESSAGES}

    def filter(self, record: logging.LogRecord) -> bool:
        throttle = self._throttles.get(record.msg) if isinstance(record.msg, str) else None
        return throttle is None or throttle.ready()


def _throttle_voice_recv_packet_logs() -> None:
    reader_log = logging.getLogger(AudioReader.__module__)
    if not any(isinstance(f, _PerPacketLogThrottle) for f in reader_log.filters):
        reader_log.addFilter(_PerPacketLogThrottle())


async def guarded_hook(ws: DiscordVoiceWebSocket, msg: dict[str, Any]) -> None:
    """voice-recv's gateway hook, but an exception is logged instead of ending discord.py's voice websocket task.

    op 2 READY starts a new voice session (first connect, or a new voice server): the other members' SSRCs from
    the previous one mean nothing there, so their mapping and decoders go before voice-recv adds the bot's own.
    """
    try:
        voice_client = ws._connection.voice_client
        if msg.get("op") == DiscordVoiceWebSocket.READY and isinstance(voice_client, DaveVoiceRecvClient):
            voice_client._forget_remote_streams()
        await voice_recv_hook(ws, msg)
    except Exception:
        log.exception("dave.gateway_hook_failed", extra={"op": msg.get("op")})


class _ResumingVoiceWebSocket(DiscordVoiceWebSocket):
    """discord.py's voice websocket that notes op 9 RESUMED, the end of a successful resume."""

    resumed = False

    async def received_message(self, msg: dict[str, Any]) -> None:
        if msg.get("op") == self.RESUMED:
            self.resumed = True
        await super().received_message(msg)


class _PromptSocketReader(SocketReader):
    """discord.py's UDP reader thread (dpy/voice_state.py:148-176), but it looks at the socket again every
    SOCKET_SELECT_SECONDS instead of every 30 s.

    On a fresh connection discord.py closes the UDP socket and makes a new one (`disconnect` + `_create_socket`).
    Closing a socket does not wake a select() already waiting on it, so upstream's reader can sit on the dead one
    for up to 30 s: the new socket's IP discovery answer goes unread, the reconnect times out and the bot leaves
    the call. Callbacks are also called from a copy of the list, which the loop thread changes while it runs.
    """

    def _do_run(self) -> None:
        while not self._end.is_set():
            if not self._running.is_set():
                self._running.wait()
                continue
            sock = self.state.socket
            try:
                readable, _, _ = select.select([sock], [], [], SOCKET_SELECT_SECONDS)
            except (ValueError, TypeError, OSError):  # closed, or not made yet: look again
                self._end.wait(0.01)
                continue
            if not readable:
                continue
            try:
                data = sock.recv(2048)
            except OSError:
                continue
            for callback in list(self._callbacks):
                try:
                    callback(data)
                except Exception:
                    log.exception("dave.socket_callback_failed")


class DaveVoiceConnectionState(VoiceConnectionState):
    """discord.py's connection state, with a voice websocket resume that resumes and a prompt UDP reader.

    On close code 4015 ("voice server crashed") discord.py 2.7.1 calls `_connect(resume=True)` (dpy/voice_state.py
    715-732), which first sends the main gateway a voice state update for the channel the bot is already in and
    waits for a VOICE_SERVER_UPDATE that does not come, then waits for a SESSION_DESCRIPTION that a resumed session
    never gets (Discord answers RESUME with HELLO and RESUMED only): after its timeout (30 s) it disconnects and
    the bot leaves the call. Here a resume is what Discord documents: a new websocket to the same endpoint, op 7
    RESUME with the session, token and `seq_ack`, until op 9 RESUMED (missed messages are re-sent and handled as
    they come). The UDP socket, transport key and DAVE session stay as they are. If the server refuses, the bot
    connects afresh, as discord.py does for other close codes.
    """

    def __init__(self, voice_client: discord.VoiceClient, *, hook: Any = None) -> None:
        super().__init__(voice_client, hook=hook)
        upstream = self._socket_reader  # started (paused) by super().__init__; replaced before any socket exists
        while upstream.is_alive():  # its run() clears the stop flag once when it starts: stop until it has ended
            upstream.stop()
            upstream.join(0.05)
        self._socket_reader = _PromptSocketReader(self)
        self._socket_reader.start()

    async def _connect(self, reconnect: bool, timeout: float, self_deaf: bool, self_mute: bool,  # noqa: ASYNC109
                       resume: bool) -> None:
        if resume and self.ws and self.token and self.session_id:
            try:
                async with asyncio.timeout(timeout):
                    await self._resume_websocket()
                log.info("dave.voice_resumed", extra={"seq_ack": self.ws.seq_ack})
                return
            except (ConnectionClosed, TimeoutError, OSError, aiohttp.ClientError) as error:
                log.warning("dave.voice_resume_failed", extra={"error": repr(error)})
            await self.disconnect(cleanup=False)
            resume = False
        await super()._connect(reconnect, timeout, self_deaf, self_mute, resume)

    async def _resume_websocket(self) -> None:
        previous = self.ws
        ws = await _ResumingVoiceWebSocket.from_connection_state(self, resume=True, hook=self.hook,
                                                                 seq_ack=previous.seq_ack)
        ws.secret_key = self.secret_key  # a resumed session keeps its transport key
        self.ws = ws
        try:
            while not ws.resumed:
                await ws.poll_event()
        finally:
            await previous.close()  # stops its heartbeat thread; the socket itself is already gone


class DaveVoiceRecvClient(voice_recv.VoiceRecvClient):
    """`await channel.connect(cls=DaveVoiceRecvClient, self_deaf=False)`, then `listen(sink)` hears DAVE voice."""

    def __init__(self, client: discord.Client, channel: discord.abc.Connectable) -> None:
        super().__init__(client, channel)
        self.receive_stats = ReceiveStats()
        _throttle_voice_recv_packet_logs()

    def create_connection_state(self) -> VoiceConnectionState:
        """The connection state with the guarded gateway hook and a working resume."""
        return DaveVoiceConnectionState(self, hook=guarded_hook)

    def listen(self, sink: voice_recv.AudioSink, *, after: AfterCallback | None = None) -> None:
        """Upstream `listen` (vr/voice_client.py:137-151) with the DAVE reader; `after(error)` runs when it stops."""
        if not self.is_connected():
            raise discord.ClientException("Not connected to voice.")
        if not isinstance(sink, voice_recv.AudioSink):
            raise TypeError(f"sink must be an AudioSink not {type(sink).__name__}")
        if self.is_listening():
            raise discord.ClientException("Already receiving audio.")
        self._reader = DaveAudioReader(sink, self, after=after)
        self._reader.start()

    def listener_alive(self) -> bool:
        """True while a reader exists and its router thread runs; False → call `listen()` again."""
        reader = self._reader
        return bool(reader) and reader.is_listening() and reader.packet_router.is_alive()

    def voice_gateway_alive(self) -> bool:
        """False when discord.py's voice websocket task has ended while we still look connected.

        Its op 27 handler is unguarded (dpy/gateway.py:1046-1056): an exception there ends the poller task
        (`_connection._runner`, dpy/voice_state.py:229, 505), stopping heartbeats and DAVE transitions while
        `is_connected()` stays True. The cure is a fresh voice connection.
        """
        runner = getattr(self._connection, "_runner", None)
        return runner is None or not runner.done()

    def _add_ssrc(self, user_id: int, ssrc: int) -> None:
        """Upstream (vr/voice_client.py:118-123), but a stream that changes hands starts fresh.

        An SSRC now announced for someone else, or a kid announced with a new SSRC without an op 13 in between
        (their client reconnected), would otherwise keep the old decoder: its Opus state and jitter-buffer
        sequence, which drops a restarted stream's packets as "old".
        """
        router = self._reader.packet_router if self._reader else None
        previous_owner = self._ssrc_to_id.get(ssrc)
        previous_ssrc = self._id_to_ssrc.get(user_id)
        if router is not None and previous_owner is not None and previous_owner != user_id:
            router.destroy_decoder(ssrc)
        if previous_ssrc is not None and previous_ssrc != ssrc:
            self._ssrc_to_id.pop(previous_ssrc, None)
            if router is not None:
                router.destroy_decoder(previous_ssrc)
        super()._add_ssrc(user_id, ssrc)

    def _forget_remote_streams(self) -> None:
        """Drop every SSRC mapping and decoder (a new voice session); op 5s map the new ones."""
        router = self._reader.packet_router if self._reader else None
        for ssrc in list(self._ssrc_to_id):
            if router is not None:
                router.destroy_decoder(ssrc)
        self._ssrc_to_id.clear()
        self._id_to_ssrc.clear()

    def _remove_ssrc(self, *, user_id: int) -> None:
        ssrc = self._id_to_ssrc.pop(user_id, None)
        if ssrc:
            if self._reader:
                self._reader.speaking_timer.drop_ssrc(ssrc)
            self._ssrc_to_id.pop(ssrc, None)


def shim_compatibility_problems() -> list[str]:
    """What this module relies on but the installed libraries no longer provide; empty when all is in place."""
    problems: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    def source(obj: object) -> str:
        try:
            return inspect.getsource(obj)  # type: ignore[arg-type]
        except (OSError, TypeError):
            return ""

    need(list(inspect.signature(PacketRouter.feed_rtp).parameters) == ["self", "packet"],
         "voice_recv PacketRouter.feed_rtp(self, packet)")
    router = PacketRouter(voice_recv.BasicSink(lambda _user, _data: None), None)  # type: ignore[arg-type]
    need(all(hasattr(router, name) for name in ("_lock", "decoders", "reader", "sink", "waiter", "_do_run",
                                                 "_end_thread", "destroy_decoder")),
         "voice_recv PacketRouter attributes _lock/decoders/reader/sink/waiter/_do_run/_end_thread/destroy_decoder")
    need("destroy_decoder(ssrc)" in source(voice_recv_hook), "voice_recv hook destroys the decoder on op 13")
    need(hasattr(PacketDecoder, "_decode_packet") and "self._decoder" in source(PacketDecoder.__init__),
         "voice_recv PacketDecoder._decode_packet and ._decoder")
    reader_init = source(AudioReader.__init__)
    need(all(f"self.{name}" in reader_init for name in ("packet_router", "keepalive", "decryptor", "voice_client")),
         "voice_recv AudioReader attributes packet_router/keepalive/decryptor/voice_client")
    need("self.packet_router.feed_rtp(" in source(AudioReader.callback), "voice_recv AudioReader.callback → feed_rtp")
    need("self.decrypt_rtp" in source(PacketDecryptor.__init__), "voice_recv PacketDecryptor.decrypt_rtp per instance")
    need(hasattr(UDPKeepAlive, "delay"), "voice_recv UDPKeepAlive.delay")
    need({"padding", "decrypted_data", "ssrc"} <= set(vr_rtp.RTPPacket.__slots__) and hasattr(vr_rtp, "is_rtcp"),
         "voice_recv RTPPacket.padding/decrypted_data/ssrc and rtp.is_rtcp")
    client_init = source(voice_recv.VoiceRecvClient.__init__)
    need(all(f"self.{name}" in client_init for name in ("_reader", "_ssrc_to_id", "_id_to_ssrc"))
         and all(hasattr(voice_recv.VoiceRecvClient, name) for name in ("_get_id_from_ssrc", "_add_ssrc",
                                                                         "_remove_ssrc")),
         "voice_recv VoiceRecvClient._reader/_ssrc_to_id/_id_to_ssrc/_get_id_from_ssrc/_add_ssrc/_remove_ssrc")
    need('dispatch("voice_member_disconnect"' in source(voice_recv_hook) and hasattr(voice_recv.AudioSink, "listener"),
         "voice_recv dispatches voice_member_disconnect to sink listeners on op 13 (TutorSink frees the kid's stream)")
    need(inspect.iscoroutinefunction(voice_recv_hook), "voice_recv gateway hook coroutine")
    need("hook" in inspect.signature(VoiceConnectionState.__init__).parameters,
         "discord.py VoiceConnectionState(hook=)")
    state_init = source(VoiceConnectionState.__init__)
    need(all(f"self.{name}" in state_init for name in ("dave_session", "dave_protocol_version", "dave_downgraded")),
         "discord.py vc._connection.dave_session / dave_protocol_version / dave_downgraded")
    need("self.dave_downgraded = False" in source(getattr(VoiceConnectionState, "_execute_transition", None)),
         "discord.py clears dave_downgraded only when an upgrade's op 22 executes")
    need("self._runner" in state_init, "discord.py vc._connection._runner (voice websocket poller task)")
    need(all(f"self.{name}" in state_init for name in ("token", "session_id", "secret_key", "ws"))
         and "self._socket_reader = SocketReader(self)" in state_init,
         "discord.py vc._connection.token/session_id/secret_key/ws and its SocketReader(self)")
    reader_run = source(getattr(SocketReader, "_do_run", None))
    need(all(f"self.{name}" in reader_run for name in ("_end", "_running", "_callbacks", "state.socket")),
         "discord.py SocketReader._do_run over state.socket/_callbacks/_running/_end")
    need(list(inspect.signature(VoiceConnectionState._connect).parameters)
         == ["self", "reconnect", "timeout", "self_deaf", "self_mute", "resume"]
         and "resume=True" in source(getattr(VoiceConnectionState, "_poll_voice_ws", None))
         and "cleanup" in inspect.signature(VoiceConnectionState.disconnect).parameters,
         "discord.py VoiceConnectionState._connect(..., resume) called with resume=True on 4015, disconnect(cleanup=)")
    need({"resume", "hook", "seq_ack"} <= set(inspect.signature(DiscordVoiceWebSocket.from_connection_state).parameters)
         and all(hasattr(DiscordVoiceWebSocket, name) for name in ("READY", "RESUMED", "poll_event", "close"))
         and all(f"self.{name}" in source(DiscordVoiceWebSocket.__init__) for name in ("seq_ack", "secret_key")),
         "discord.py DiscordVoiceWebSocket.from_connection_state(resume, hook, seq_ack), RESUMED, seq_ack")
    need(hasattr(AudioReader, "_is_ip_discovery_packet"), "voice_recv AudioReader._is_ip_discovery_packet")
    need("self._hook(self, msg)" in source(DiscordVoiceWebSocket.received_message),
         "discord.py awaits the hook in DiscordVoiceWebSocket.received_message")
    need(all(hasattr(davey.DaveSession, name) for name in ("decrypt", "status"))
         and hasattr(davey.MediaType, "audio")
         and all(hasattr(davey.SessionStatus, name) for name in ("pending", "awaiting_response")),
         "davey DaveSession.decrypt/status, MediaType.audio, SessionStatus.pending/awaiting_response")
    return problems

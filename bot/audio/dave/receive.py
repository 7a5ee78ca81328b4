"""The receive half of the shim: voice-recv's reader, router and decoder with the DAVE step (see the package doc)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import davey
import discord
import discord.opus
from discord.ext import voice_recv
from discord.ext.voice_recv import rtp as vr_rtp
from discord.ext.voice_recv.opus import PacketDecoder
from discord.ext.voice_recv.reader import AudioReader
from discord.ext.voice_recv.router import PacketRouter
from nacl.exceptions import CryptoError

from bot.audio.dave.frames import OPUS_SILENCE, ReceiveStats, Throttle, has_dave_trailer
from bot.audio.formats import DISCORD_FRAME_BYTES

if TYPE_CHECKING:
    from bot.audio.dave.connection import DaveVoiceRecvClient

log = logging.getLogger("bot.audio.dave")

SILENCE_PCM = bytes(DISCORD_FRAME_BYTES)
RTP_HEADER_BYTES = 12
KEEPALIVE_SECONDS = 5
HOLD_SECONDS = 0.15  # how long a DAVE frame may wait for the MLS message that brings its key
HOLD_MAX_FRAMES = 8  # per stream; beyond that the oldest waiting frame is concealed
_AWAITING_KEYS = (davey.SessionStatus.pending, davey.SessionStatus.awaiting_response)
_CONCEAL = object()  # feed the packet with no payload: the Opus decoder conceals it (PLC)
_HOLD = object()  # the key for this frame is probably in an MLS message discord.py has not processed yet

AfterCallback = Callable[[Exception | None], Any]


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
        self._error_log = Throttle()
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
        self._throttles = {message: Throttle() for message in self.PER_PACKET_MESSAGES}

    def filter(self, record: logging.LogRecord) -> bool:
        throttle = self._throttles.get(record.msg) if isinstance(record.msg, str) else None
        return throttle is None or throttle.ready()


def throttle_voice_recv_packet_logs() -> None:
    reader_log = logging.getLogger(AudioReader.__module__)
    if not any(isinstance(f, _PerPacketLogThrottle) for f in reader_log.filters):
        reader_log.addFilter(_PerPacketLogThrottle())

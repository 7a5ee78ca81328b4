"""The connection half of the shim: discord.py's connection state and voice client, made to survive the call
moving (see the package doc)."""

from __future__ import annotations

import asyncio
import logging
import select
from typing import Any

import aiohttp
import discord
from discord.errors import ConnectionClosed
from discord.ext import voice_recv
from discord.ext.voice_recv.gateway import hook as voice_recv_hook
from discord.gateway import DiscordVoiceWebSocket
from discord.voice_state import SocketReader, VoiceConnectionState

from bot.audio.dave.frames import ReceiveStats
from bot.audio.dave.receive import AfterCallback, DaveAudioReader, throttle_voice_recv_packet_logs

log = logging.getLogger("bot.audio.dave")

SOCKET_SELECT_SECONDS = 0.25  # how soon the UDP reader notices that discord.py replaced its socket


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
        throttle_voice_recv_packet_logs()

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

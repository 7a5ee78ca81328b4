"""One conversation's voice connection: join, listen, play, and join again when only a new connection helps.

The conversation's watchdog calls `check()` once a second. Two faults need a fresh connection (every DAVE
decrypt failing, or discord.py's voice websocket task dead); a dead listener only needs a fresh sink. Leaving
is bounded because discord.py waits for a gateway acknowledgement that may never come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.audio.playback import PlaybackSource
from bot.audio.sink import AudioCallback, LeftCallback, TutorSink
from bot.audio.voice_encoder import OpusVoice
from bot.errors import VoiceConnectFailed

log = logging.getLogger("bot.conversation")

VOICE_CONNECT_TIMEOUT_S = 20.0
DEAF_RECONNECT_S = 5.0  # every DAVE decrypt failing this long → join the voice channel again
MAX_VOICE_RECONNECTS = 3
VOICE_DISCONNECT_TIMEOUT_S = 5.0

VoiceConnector = Callable[[Any], Awaitable[Any]]


async def connect_voice(channel: Any) -> Any:
    """Join with the DAVE-capable receive client, undeafened so we can hear the kids.

    A join cancelled midway (`/tutor stop`, shutdown) leaves discord.py's half-made voice client registered
    for the guild, and every later join would be refused as "Already connected"; it is disconnected here.
    """
    import discord

    from bot.audio.dave import DaveVoiceRecvClient

    try:
        return await channel.connect(cls=DaveVoiceRecvClient, self_deaf=False, timeout=VOICE_CONNECT_TIMEOUT_S)
    except TimeoutError:  # discord.py has already disconnected and unregistered it
        raise VoiceConnectFailed("Discord's voice server didn't answer in time. Try again in a minute.") from None
    except discord.ClientException as exc:  # e.g. already connected in this server: that client is not ours
        raise VoiceConnectFailed(str(exc)) from None
    except discord.ConnectionClosed as exc:
        raise VoiceConnectFailed(f"the voice connection closed (code {exc.code}).") from None
    except asyncio.CancelledError:
        await leave_voice(channel.guild.voice_client, {"guild_id": channel.guild.id, "during": "join"})
        raise


async def leave_voice(client: Any, tags: dict[str, Any]) -> None:
    """Disconnect, bounded: discord.py waits for the gateway's acknowledgement, which may never come.

    However it ends, the client is unregistered, so the next `/tutor start` can join.
    """
    if client is None:
        return
    try:
        async with asyncio.timeout(VOICE_DISCONNECT_TIMEOUT_S):
            await client.disconnect(force=True)
    except TimeoutError:
        log.warning("conversation.voice_disconnect_slow", extra=tags)
    except Exception:
        log.exception("conversation.voice_disconnect_failed", extra=tags)
    finally:
        with contextlib.suppress(Exception):
            client.cleanup()


class VoiceLink:
    """Owns the voice client (replaced on each rejoin) and the receive sink; plays `playback` on it."""

    def __init__(self, channel: Any, connect: VoiceConnector, on_kid_audio: AudioCallback,
                 playback: PlaybackSource, *, tags: dict[str, Any], on_kid_left: LeftCallback | None = None) -> None:
        self.channel = channel
        self._connect = connect
        self._on_kid_audio = on_kid_audio
        self._on_kid_left = on_kid_left
        self._playback = playback
        self._tags = tags
        self.reconnects = 0
        self.client: Any = None
        self.sink: TutorSink | None = None
        self._polled = False

    async def open(self) -> None:
        """Join, listen and play; on failure the caller's teardown calls `close()`."""
        self.client = await self._connect(self.channel)
        self.listen()
        self.play()

    def play(self) -> None:
        """Play the tutor's voice, Opus-encoded with `TUTOR_VOICE`, paused whenever there is nothing to say.

        A tap per player: its end must not close the shared audio.
        """
        self.client.play(OpusVoice(self._playback.tap()))
        self._playback.pause_when_idle(self.client)

    def listen(self) -> None:
        """(Re)start voice receive with a fresh sink (voice-recv cleans up the old one when its reader ends)."""
        old = self.sink
        self.sink = TutorSink(asyncio.get_running_loop(), self._on_kid_audio, on_left=self._on_kid_left)
        self.sink.poll(self._polled)
        if old is not None:
            old.poll(False)  # whatever it still holds is delivered, and its stragglers wake the loop
        self.client.listen(self.sink)

    def poll_kid_audio(self, polled: bool) -> None:
        """While polled (the input pump is ticking), kids' frames wait for `take_kid_audio()` instead of
        waking the loop one by one (see `bot.audio.sink`)."""
        self._polled = polled
        if self.sink is not None:
            self.sink.poll(polled)

    def take_kid_audio(self) -> None:
        """Deliver the kids' frames that arrived since the last call (to `on_kid_audio`, on this thread)."""
        if self.sink is not None:
            self.sink.deliver_pending()

    @property
    def receive_stats(self) -> Any:
        return getattr(self.client, "receive_stats", None)

    def is_connected(self) -> bool:
        return bool(self.client.is_connected())

    async def check(self) -> bool:
        """Repair what a new connection or sink can repair; returns whether voice is connected now."""
        connected = self.is_connected()
        if connected and self._needs_reconnect():
            await self.reconnect()
            connected = self.is_connected()
        elif connected and not self.client.listener_alive():
            log.warning("conversation.listener_restarted", extra=self._tags)
            self.listen()
        return connected

    def _needs_reconnect(self) -> bool:
        """Deaf (every DAVE decrypt failing) or a dead voice websocket task: only a new connection helps."""
        stats = self.receive_stats
        deaf = stats is not None and stats.all_failing_for(DEAF_RECONNECT_S)
        return deaf or not self.client.voice_gateway_alive()

    async def reconnect(self) -> None:
        """Leave and join again (bounded); playback and the Live session carry on untouched."""
        self.reconnects += 1
        log.warning("conversation.voice_reconnect", extra={**self._tags, "attempt": self.reconnects})
        if self.reconnects > MAX_VOICE_RECONNECTS:
            return  # the disconnect rule ends the conversation if voice stays broken
        with contextlib.suppress(Exception):
            self.client.stop_listening()
        await self._leave()
        try:
            await self.open()
        except Exception:
            log.exception("conversation.voice_reconnect_failed", extra=self._tags)

    async def close(self) -> None:
        """Stop receiving and playing, leave the channel, release the sink; each step may fail alone."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.stop_listening()
            with contextlib.suppress(Exception):
                self.client.stop()
            await self._leave()
        if self.sink is not None:
            self.sink.cleanup()

    async def _leave(self) -> None:
        await leave_voice(self.client, self._tags)

"""Knowing when the tutor has finished speaking, so a conversation can end after its goodbye, not over it.

A goodbye is done when the tutor's reply has ended (3.8 sends generation_complete once all its audio is
out, and turn_complete only after its estimated playback) and the audio handed to playback has played
out. Two things end a conversation that way: a limit (the app asks for a goodbye, then waits) and the
tutor's own `end_conversation` call (its goodbye may be on its way, playing, or already over). Every wait
is bounded: a reply that never ends must not keep the call open.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

GOODBYE_TIMEOUT_S = 10.0
REPLY_START_GRACE_S = 2.0  # after end_conversation with nothing playing: how long a goodbye may take to start


class Playback(Protocol):
    @property
    def buffered_ms(self) -> float: ...


class TutorVoice:
    """Follows the tutor's turns (fed by the conversation's Live events) and waits for them to end."""

    def __init__(self, playback: Playback) -> None:
        self._playback = playback
        self.speaking = False  # reply audio arrived and the reply has not ended yet
        self._waiters: list[asyncio.Future[None]] = []
        self._started: asyncio.Event = asyncio.Event()

    def reply_audio(self) -> None:
        """Reply audio arrived."""
        self.speaking = True
        self._started.set()

    def reply_ended(self) -> None:
        """The tutor's reply ended: all its audio is in (generation_complete), or its turn completed
        (interrupted or blocked replies have no generation_complete)."""
        self.speaking = False
        self._started.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def next_reply_end(self) -> None:
        """Wait for the end of the tutor's next (or current) reply."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    async def played_out(self) -> None:
        """Wait while the audio already queued for playback plays."""
        await asyncio.sleep(self._playback.buffered_ms / 1000)

    async def until_goodbye_done(self) -> None:
        """After `end_conversation`: let a goodbye that is coming, playing or just over finish (bounded)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                if not self.speaking:  # the call may come before the goodbye's audio, or after it
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(REPLY_START_GRACE_S):
                            await self._started.wait()
                if self.speaking:
                    await self.next_reply_end()
                await self.played_out()

    async def after_prompted_goodbye(self) -> None:
        """After the app asked for a goodbye: wait for that reply's turn and its playback (bounded)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                await self.next_reply_end()
                await self.played_out()

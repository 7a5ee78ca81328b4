"""The send path of a `LiveSession`: what waits to go out, what went out unconfirmed, and replay.

`Outbound` owns the outbox (`AudioBoundedQueue`: input kept while disconnected, oldest audio dropped
past the cap) and the replay ring (`ReplayRing`: sent but not yet covered by a resumption handle).
`run(conn)` is the sender task of one connection; `confirm` forgets what a handle covers; after a
reconnect `requeue_unconfirmed` puts what the new connection has not heard back in front of new input.

Replay window: the Gemini Developer API never sends `last_consumed_client_message_index` (it comes only
with transparent resumption, which that API rejects), so a handle is taken to cover what was sent more
than `UNCONFIRMED_MARGIN_S` before it arrived. A resume therefore replays at most that margin of input
the server may already hold (a few duplicated frames, never a lost one).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bot.audio.formats import LIVE_INPUT
from bot.live.buffers import AudioBoundedQueue, Outgoing, ReplayRing, SentMessage, send_outgoing
from bot.live.connection import Connection
from bot.live.options import LiveConnectOptions, LiveCounters

UNCONFIRMED_MARGIN_S = 0.5  # without an index, messages this recent may not be in the handle yet
MAX_COALESCED_AUDIO_BYTES = LIVE_INPUT.bytes_for_ms(100)  # frames queued behind each other go as one message


@dataclass(frozen=True, slots=True)
class Replay:
    """What a reconnect sends again: `since` is when the oldest replayed message first went out (None: nothing)."""

    queued_ms: float  # all input audio now waiting to go (replayed + queued meanwhile)
    replayed_ms: float
    since: float | None


class Outbound:
    """Outbox + replay ring + the sender loop; every method runs on the event loop."""

    def __init__(self, options: LiveConnectOptions, counters: LiveCounters) -> None:
        self._outbox = AudioBoundedQueue(LIVE_INPUT.bytes_for_ms(options.input_queue_seconds * 1000))
        self._ring = ReplayRing(LIVE_INPUT.bytes_for_ms(options.replay_seconds * 1000))
        self._ready = asyncio.Event()
        self._counters = counters

    @property
    def dropped_bytes(self) -> int:
        """Input audio dropped because the outbox was full (a long outage)."""
        return self._outbox.dropped_bytes

    def push(self, message: Outgoing) -> None:
        """Queue a message; the sender picks it up at once when connected."""
        self._outbox.push(message)
        self._ready.set()

    async def run(self, conn: Connection) -> None:
        """Send queued messages on `conn` until cancelled or the socket fails (the error propagates)."""
        session = conn.session
        while True:
            message = self._outbox.pop_coalesced(MAX_COALESCED_AUDIO_BYTES)
            if message is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            now = time.monotonic()
            self._ring.add(SentMessage(conn.number, conn.next_index, now, message))  # before sending: replayable
            conn.next_index += 1
            await send_outgoing(session, message)
            self._counters.sent(message.kind, len(message.audio), now)

    def confirm(self, connection: int, *, through_index: int | None, now: float) -> None:
        """A resumption handle arrived on `connection`: forget what it covers (by index, else by time)."""
        if through_index is not None:
            self._ring.confirm(connection, through_index=through_index)
        else:
            self._ring.confirm(connection, sent_before=now - UNCONFIRMED_MARGIN_S)

    def requeue_unconfirmed(self, *, resumed: bool, last_turn_complete_at: float) -> Replay:
        """After a reconnect: put back in front what the new connection has not heard.

        A resumed connection hears everything the handle did not cover. A fresh one is re-seeded from the
        transcript, so only what came after the last completed turn is replayed, and never old history.
        """
        if resumed:
            replay = self._ring.take_sent()
        else:
            # A tool result answers a call of the old session: a fresh one never made that call.
            replay = [m for m in self._ring.take_sent(sent_after=last_turn_complete_at - UNCONFIRMED_MARGIN_S)
                      if m.message.kind not in ("history", "tool_response")]
        self._outbox.prepend([m.message for m in replay])
        self._ready.set()
        replayed_audio = sum(len(m.message.audio) for m in replay)
        return Replay(queued_ms=LIVE_INPUT.ms_for_bytes(self._outbox.audio_bytes),
                      replayed_ms=LIVE_INPUT.ms_for_bytes(replayed_audio),
                      since=replay[0].sent_at if replay else None)

"""The send path of a `LiveSession`: what waits to go out, what went out unconfirmed, and replay.

`Outbound` owns the outbox (`AudioBoundedQueue`: input kept while disconnected, oldest audio dropped
past the cap) and the replay ring (`ReplayRing`: sent but not yet covered by a resumption handle).
`run(conn)` is the sender task of one connection; `confirm` forgets what a handle covers; after a
reconnect `requeue_unconfirmed` puts what the new connection has not heard back in front of new input.

Send policy (when queued input goes out; measured with `scripts/bench live`): every client message costs
the same fixed work in the SDK and on the wire (validation, base64, JSON, TLS framing), so input goes in
`input_chunk_ms` messages while a kid keeps talking — but never at the cost of a reply or a barge-in:
* an urgent frame (`send_audio(..., urgent=True)`: the first or last frame of a talk spurt, which the
  mixer knows) goes at once, with whatever is held before it: the server hears the start of a barge-in
  without delay, and the end of speech is not held back;
* anything that is not audio (`audio_stream_end`, text, history) goes at once, after the audio before it;
* otherwise audio waits until `input_chunk_ms` of it is queued, or the oldest of it has waited that long
  (a stalled pump never holds speech longer than one message's worth).
Held audio is in the outbox like any unsent input, so a reconnect keeps and sends it; replay after a
reconnect goes at once. `input_chunk_ms=20` is the old behaviour: each 20 ms frame on its own message.

Replay window: the Gemini Developer API never sends `last_consumed_client_message_index` (it comes only
with transparent resumption, which that API rejects), so a handle is taken to cover what was sent more
than `UNCONFIRMED_MARGIN_S` before it arrived. A resume therefore replays what went out in that margin,
which the server may already hold: duplicated, never lost. Measured with `python -m bench.replay` (real
SDK, truthful fake, real-time input): 500 ms heard twice when a kid is talking as the handle arrives, 0 when
nobody is (the usual case: handles follow a reply), nothing lost; after a stalled loop flushes a backlog
inside the margin it can be more audio than the margin's length.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from bot.audio.formats import LIVE_INPUT
from bot.live.buffers import AudioBoundedQueue, Outgoing, ReplayRing, SentMessage, send_outgoing
from bot.live.connection import Connection
from bot.live.options import LiveConnectOptions, LiveCounters

UNCONFIRMED_MARGIN_S = 0.5  # without an index, messages this recent may not be in the handle yet
MAX_COALESCED_AUDIO_BYTES = LIVE_INPUT.bytes_for_ms(100)  # one message never carries more (a backlog goes in these)


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
        self._chunk_bytes = max(1, LIVE_INPUT.bytes_for_ms(options.input_chunk_ms))
        self._chunk_s = options.input_chunk_ms / 1000
        self._flush = False  # something urgent is queued: send everything queued now
        self._held_since: float | None = None  # when the oldest unsent audio was queued

    @property
    def dropped_bytes(self) -> int:
        """Input audio dropped because the outbox was full (a long outage)."""
        return self._outbox.dropped_bytes

    def push(self, message: Outgoing, *, urgent: bool = False) -> None:
        """Queue a message; non-audio and urgent audio go at once, other audio by the send policy."""
        starts_hold = message.kind == "audio" and self._held_since is None
        if starts_hold:
            self._held_since = time.monotonic()
        self._outbox.push(message)
        self._flush = self._flush or urgent or message.kind != "audio"
        if starts_hold or self._flush or self._outbox.audio_bytes >= self._chunk_bytes:
            self._ready.set()  # otherwise the sender is already asleep until the held audio's deadline

    def _due(self, now: float) -> float | None:
        """0 when the head of the outbox should go now; else seconds until it must, or None (nothing queued)."""
        if not len(self._outbox):
            return None
        if self._flush or self._outbox.audio_bytes >= self._chunk_bytes:
            return 0.0
        return max(0.0, (self._held_since or now) + self._chunk_s - now)

    def _pop(self) -> Outgoing | None:
        """The next message to send; keeps the flush and hold bookkeeping in step with the outbox."""
        message = self._outbox.pop_coalesced(max(self._chunk_bytes, MAX_COALESCED_AUDIO_BYTES))
        if not len(self._outbox):
            self._flush = False
        if self._outbox.audio_bytes == 0:
            self._held_since = None
        elif message is not None and message.kind == "audio":
            self._held_since = time.monotonic()  # the rest was queued after what just went
        return message

    async def _next(self) -> Outgoing:
        """Wait until the send policy says the head of the outbox is due, and take it."""
        while True:
            wait = self._due(time.monotonic())
            if wait == 0.0:
                message = self._pop()
                if message is not None:
                    return message
                continue
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._ready.wait()

    async def run(self, conn: Connection) -> None:
        """Send queued messages on `conn` until cancelled or the socket fails (the error propagates)."""
        session = conn.session
        while True:
            message = await self._next()
            now = time.monotonic()
            self._ring.add(SentMessage(conn.number, conn.next_index, now, message))  # before sending: replayable
            conn.next_index += 1
            await send_outgoing(session, message)
            self._counters.sent(message.kind, message.audio, now)

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
        if replay:
            self._flush = True  # the new connection should hear it now, not one chunk at a time
            self._held_since = self._held_since or time.monotonic()
        self._ready.set()
        replayed_audio = sum(len(m.message.audio) for m in replay)
        return Replay(queued_ms=LIVE_INPUT.ms_for_bytes(self._outbox.audio_bytes),
                      replayed_ms=LIVE_INPUT.ms_for_bytes(replayed_audio),
                      since=replay[0].sent_at if replay else None)

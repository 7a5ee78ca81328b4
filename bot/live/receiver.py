"""The receive path of a `LiveSession`: server frames in, the consumer's events and the supervisor's signals out.

`Receiver.run(conn)` is the receiver task of one connection (the sender is `bot.live.outbound`). Each
readable frame (`bot.live.frames`) is read into events (`bot.live.inbound`) and published in order on the
session's `EventStream`, except reply output past the runaway bound (`bot.live.reply_watch`), which is
stopped: the kids hear an `Interrupted`, and the model is told to stop. It feeds the session's
`ReplyWatch` (what the model is doing) and keeps what the supervisor acts on: `handle` (the newest
resumable handle, which also confirms the input it covers), `go_away` (set by a GoAway, with the
connection's hand-over deadline) and `progress` (a reply ended or a handle arrived: a pending
hand-over looks again).
"""

from __future__ import annotations

import asyncio
import logging
import time

from google.genai import types

from bot.live.buffers import Outgoing
from bot.live.connection import Connection, handover_deadline
from bot.live.events import AudioChunk, GenerationComplete, Interrupted, LiveEvent, OutputTranscript, TurnComplete
from bot.live.frames import Skipped, receive_messages
from bot.live.inbound import ServerMessageReader
from bot.live.options import LiveCounters
from bot.live.outbound import Outbound
from bot.live.reply_watch import Output, ReplyWatch
from bot.live.stream import EventStream
from bot.prompting import app_note

log = logging.getLogger(__name__)

REPLY_STOP_NOTE = app_note("Your reply went on far too long and was stopped. "
                           "Stop now and ask the children one short question.")


class Receiver:
    """What the server said, for one session across its connections; every method runs on the event loop."""

    def __init__(self, session_id: str, *, watch: ReplyWatch, counters: LiveCounters, stream: EventStream,
                 outbound: Outbound) -> None:
        self._session_id = session_id
        self._watch = watch
        self._counters = counters
        self._stream = stream
        self._outbound = outbound
        self._reader = ServerMessageReader()
        self.handle: str | None = None  # the newest resumable handle (None: none yet, or it was refused)
        self.go_away = asyncio.Event()  # a GoAway came on the connection being served
        self.progress = asyncio.Event()  # a reply completed or a handle arrived

    async def run(self, conn: Connection) -> None:
        """Read `conn` until it closes (the SDK's `errors.APIError` propagates, with the close code)."""
        async for message in receive_messages(conn.session, self._on_frame_skipped):
            conn.last_message_at = time.monotonic()
            self._on_message(conn, message)

    def drop_held_audio(self) -> None:
        """A new connection: what was held of the cut reply's audio (a split sample, resampler state) is dropped."""
        self._reader.audio.drop()

    def _on_frame_skipped(self, skipped: Skipped) -> None:
        """A frame this SDK cannot read: counted and logged, the connection and the reply go on."""
        self._counters.frames_skipped += 1
        log.warning("live.frame_skipped", extra={"live_session": self._session_id, "reason": skipped.reason,
                                                 "bytes": skipped.size, "skipped": self._counters.frames_skipped})

    def _on_message(self, conn: Connection, message: types.LiveServerMessage) -> None:
        """Publish what the message carries, then act on its resumption update and GoAway."""
        now = time.monotonic()
        reading = self._reader.read(message, now)
        for event in reading.events:
            if isinstance(event, AudioChunk | OutputTranscript) and not self._reply_output_heard(event):
                continue
            if isinstance(event, AudioChunk):
                self._counters.reply_audio(len(event.pcm), now)
            elif isinstance(event, GenerationComplete):
                self._counters.reply_done()
                self._watch.on_generation_complete(now)
            elif isinstance(event, TurnComplete):
                self._counters.reply_done()
                self._watch.on_turn_complete(now)
                self.progress.set()
            self._stream.publish(event)
        if reading.resumption is not None:
            self._on_resumption_update(conn, reading.resumption, now)
        if reading.go_away is not None and conn.go_away_deadline is None:
            conn.go_away_deadline = handover_deadline(reading.go_away.time_left, now)
            log.info("live.go_away", extra={"live_session": self._session_id, "connection": conn.number,
                                            "time_left": reading.go_away.time_left, "have_handle": bool(self.handle),
                                            "replying": self._watch.replying})
            self.go_away.set()

    def _reply_output_heard(self, event: LiveEvent) -> bool:
        """False for output the kids must not hear: a reply past `max_reply_seconds` is stopped here."""
        verdict = self._watch.on_output(event)
        if verdict is Output.STOP:
            log.warning("live.reply_stopped", extra={"live_session": self._session_id,
                                                     "seconds": self._watch.max_reply_s})
            self._stream.publish(Interrupted())
            self._outbound.push(Outgoing("interrupt", text=REPLY_STOP_NOTE))
        return verdict is Output.PLAY

    def _on_resumption_update(self, conn: Connection, update: types.LiveServerSessionResumptionUpdate,
                              now: float) -> None:
        if conn.replacing:
            # The replacement resumes from the handle chosen when dialling began; confirming more here
            # would drop messages that handle does not cover.
            return
        if update.resumable and update.new_handle:
            self.handle = update.new_handle
            self._watch.on_handle()
            self.progress.set()
            index = update.last_consumed_client_message_index
            self._outbound.confirm(conn.number, through_index=int(index) if index is not None else None, now=now)

"""What the model is doing, as far as `LiveSession` must know: a reply in progress, whether the newest
resumption handle covers what was said, and the bounds on a misbehaving server.

Pure and synchronous (`LiveSession` feeds it the events it reads and acts on the answers):
* GoAway hands over only when no reply is in progress and a handle issued after the last reply exists
  (`ready_to_hand_over`): resuming from an older handle would make the model forget what it just said.
* A reply longer than `max_reply_s` is stopped (`on_output` answers STOP once, then DROP for the rest of
  it); one that runs on for as long again raises `RunawayReply`, and the connection is replaced.
* `unanswered` counts connections in a row that took the kids' input and sent nothing back
  (`watch_answers` raises `Unanswered` on one).
* `last_reply_end`: the end of the last reply, `generation_complete` (or `turn_complete` without one).
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass

from bot.audio.formats import LIVE_OUTPUT
from bot.live.connection import Connection
from bot.live.events import AudioChunk, LiveEvent
from bot.live.options import LiveCounters


class Unanswered(Exception):
    """The server took the kids' input and sent nothing at all for the answer timeout."""


class RunawayReply(Exception):
    """A reply went on after it was stopped at `max_reply_s`."""


class Output(enum.Enum):
    """What to do with one piece of reply output."""

    PLAY = "play"
    STOP = "stop"  # the reply just ran past its bound: interrupt it and ask the model to stop
    DROP = "drop"  # the rest of a stopped reply: nobody hears it


@dataclass(slots=True)
class ReplyWatch:
    max_reply_s: float
    replying: bool = False  # the model started a reply whose turn_complete has not come
    handle_covers_replies: bool = True  # no model output since the newest handle (or since connecting)
    unanswered: int = 0
    last_reply_end: float = 0.0
    _generated: bool = False
    _reply_bytes: int = 0
    _stopped: bool = False

    @property
    def ready_to_hand_over(self) -> bool:
        """No reply is in progress, and the newest handle covers everything the model said."""
        return not self.replying and self.handle_covers_replies

    def on_output(self, event: LiveEvent) -> Output:
        """Reply audio or transcript arrived."""
        self.replying, self.handle_covers_replies, self.unanswered = True, False, 0
        if isinstance(event, AudioChunk):
            self._reply_bytes += len(event.pcm)
        cap = LIVE_OUTPUT.bytes_for_ms(self.max_reply_s * 1000)
        if self._stopped:
            if self._reply_bytes > 2 * cap:
                raise RunawayReply
            return Output.DROP
        if self._reply_bytes <= cap:
            return Output.PLAY
        self._stopped = True
        return Output.STOP

    def on_generation_complete(self, now: float) -> None:
        self.last_reply_end, self._generated = now, True

    def on_turn_complete(self, now: float) -> None:
        if not self._generated:  # interrupted or blocked: turn_complete is its only end
            self.last_reply_end = now
        self.replying, self.handle_covers_replies, self.unanswered = False, False, 0
        self._generated, self._reply_bytes, self._stopped = False, 0, False

    def on_handle(self) -> None:
        """A resumable handle arrived: it covers everything said so far."""
        self.handle_covers_replies = True

    def on_reconnect(self) -> None:
        """A new connection: the cut reply is over and nothing has been said on it yet."""
        self.replying, self.handle_covers_replies = False, True
        self._generated, self._reply_bytes, self._stopped = False, 0, False


async def watch_answers(conn: Connection, counters: LiveCounters, answer_s: float) -> None:
    """Raise `Unanswered` once the kids' input ended on `conn` and not one message came for `answer_s` seconds."""
    while True:
        await asyncio.sleep(min(1.0, answer_s / 4))
        prompt_at = counters.last_prompt_at
        if prompt_at is not None and prompt_at > conn.last_message_at and time.monotonic() - prompt_at > answer_s:
            raise Unanswered

"""What a `LiveSession`'s consumer sees: raw events in order, plus the whole turns they complete.

`EventStream` is the session's one output queue. Every published event goes through the
`TranscriptAssembler`, and the turns it completes follow the event that completed them. Completed turns
with words are also remembered (the newest `max_remembered`), because a fresh connection is re-seeded
with them; flagged turns are not (an unsafe exchange is never replayed). `None` in the queue marks the end.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from bot.live.buffers import HistoryTurn
from bot.live.events import Failed, LiveEvent, TurnTranscribed
from bot.live.transcript import TranscriptAssembler
from bot.prompting import as_data


class EventStream:
    """The ordered events of one session, the turns they make, and the turns to re-seed with."""

    def __init__(self, max_remembered: int) -> None:
        self._queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue()
        self._assembler = TranscriptAssembler()
        self._completed: deque[HistoryTurn] = deque(maxlen=max_remembered)

    @property
    def completed_turns(self) -> list[HistoryTurn]:
        """The newest completed turns with words, oldest first."""
        return list(self._completed)

    def publish(self, event: LiveEvent) -> None:
        """Emit a raw event, then any turns it completed."""
        self.emit(event)
        for turn in self._assembler.feed(event):
            self.emit_turn(turn)

    def emit(self, event: LiveEvent) -> None:
        """Emit an event as is (no turn assembly)."""
        self._queue.put_nowait(event)

    def emit_turn(self, turn: TurnTranscribed) -> None:
        """A completed turn: remembered for re-seeding a fresh connection (unless flagged: an unsafe exchange
        is never replayed; the words as data, `bot.prompting.as_data`), then emitted."""
        if turn.text and turn.flag_reason is None:
            self._completed.append(HistoryTurn(turn.role, as_data(turn.text)))
        self.emit(turn)

    def withhold(self, role: str, text: str) -> None:
        """Never re-seed this turn (flagged after it completed, e.g. the child's words behind an alert)."""
        kept = [t for t in self._completed if (t.role, t.text) != (role, as_data(text))]
        self._completed.clear()
        self._completed.extend(kept)

    def cut_by_reconnect(self, *, replayed_since: float | None) -> None:
        """The connection was replaced: emit the reply it cut as an interrupted turn (see the assembler)."""
        for turn in self._assembler.cut_by_reconnect(replayed_since=replayed_since):
            self.emit_turn(turn)

    def flush(self) -> None:
        """The session is ending: emit whatever turns are still open."""
        for turn in self._assembler.flush():
            self.emit(turn)

    def end(self) -> None:
        """No more events: `events()` returns once it reaches this point."""
        self._queue.put_nowait(None)

    async def events(self) -> AsyncIterator[LiveEvent]:
        """Every event in order; ends after `Failed` or `end()`. One consumer only."""
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event
            if isinstance(event, Failed):
                return

    def drain_turns(self) -> list[TurnTranscribed]:
        """Take the completed turns still queued (for storage when nobody consumes the queue any more)."""
        turns = []
        while not self._queue.empty():
            event = self._queue.get_nowait()
            if isinstance(event, TurnTranscribed):
                turns.append(event)
        return turns

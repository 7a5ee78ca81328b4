"""The turn writer: one conversation's completed turns go to SQLite in order, off the audio path.

The Live event consumer only enqueues; this task commits each turn as soon as it can (so a crash loses at
most the turn in progress) and retries a refused write with backoff on top of the repository's own lock
retries, so a slow or briefly locked disk delays turns but never drops or reorders them.

Usage snapshots and session events (tool calls, budget stops) travel through the same queue, so each is
written after the turn it belongs to and can point at it. A usage snapshot arrives with the end of a reply:
it points at the last turn. A tool call arrives while the tutor is answering, often before the child's words
are transcribed (3.8 does not order the input transcription against the reply), so it belongs to the
reply's prompt: the child turn already written since the last tutor turn, or else the next child turn
written — held until then (at most `HOLD_FOR_PROMPT_S`, then stored without one).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bot.cost import TokenCounts
from bot.storage.models import EventRow, TurnRow
from bot.storage.repository import Repository

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0
HOLD_FOR_PROMPT_S = 8.0  # a tool call waits this long for its child turn; a reply's prompt closes with the reply


@dataclass(frozen=True, slots=True)
class PendingTurn:
    """A completed turn ready to store (wall-clock times, speakers already named)."""

    role: str
    text: str
    started_at: datetime
    ended_at: datetime
    speaker_ids: tuple[int, ...] = ()  # everyone who spoke (or typed) it, the one credited first first
    speaker_name: str | None = None
    interrupted: bool = False
    flag_reason: str | None = None
    typed: bool = False


@dataclass(frozen=True, slots=True)
class PendingUsage:
    """One usage snapshot (the bill is their sum), priced when it arrived."""

    tokens: TokenCounts
    total_tokens: int
    cost_usd: float
    at: datetime


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A tool call or a budget stop; `belongs_to` picks its turn, `alert` tells the moderators about it."""

    kind: Literal["tool_call", "budget_stop"]
    name: str
    at: datetime
    call_id: str | None = None
    category: str | None = None
    reason: str = ""
    outcome: str = ""
    belongs_to: Literal["prompt", "last"] = "last"
    alert: bool = False


@dataclass(frozen=True, slots=True)
class PendingOutcome:
    """What finally became of an earlier tool call (e.g. the model cancelled it)."""

    call_id: str
    outcome: str


@dataclass(frozen=True, slots=True)
class PendingPromptFlag:
    """A reply was blocked: flag the child turns already written that prompted it (spoken or typed since the
    last reply began; the prompt still to be written comes flagged from the transcript assembler)."""

    reason: str


Pending = PendingTurn | PendingUsage | PendingEvent | PendingOutcome | PendingPromptFlag
OnAlert = Callable[[EventRow, "TurnRow | None"], Awaitable[None]]


async def _no_alert(event: EventRow, turn: TurnRow | None) -> None:
    return None


class TurnWriter:
    """Owns the writer task; `stored`/`flagged` count the turns that reached the database."""

    def __init__(self, repository: Repository, guild_id: int, session_id: int, *,
                 on_flagged: Callable[[TurnRow], Awaitable[None]], on_alert: OnAlert = _no_alert) -> None:
        self._repository = repository
        self._guild_id = guild_id
        self._session_id = session_id
        self._on_flagged = on_flagged
        self._on_alert = on_alert
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._last_turn: int | None = None
        self._last_role: str | None = None
        self._held: list[PendingEvent] = []  # tool calls waiting for the child turn that prompted them
        self._held_until = 0.0  # (loop time) when the held calls go without their turn: the hold counts from the first
        # Child turns that prompt the next reply: written since the last tutor turn or begun after it started
        # (typed while it was playing), with when they began.
        self._prompt: list[tuple[int, datetime]] = []
        self._reply_began: datetime | None = None  # when the last tutor turn written began
        self.stored = 0
        self.flagged = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"turn-writer:{self._guild_id}")

    def put(self, item: Pending) -> None:
        """Queue a turn, usage snapshot, event or outcome; never blocks, never fails."""
        self._queue.put_nowait(item)

    async def close(self, drain_seconds: float) -> None:
        """Let queued turns reach the database (at most `drain_seconds`), then stop the task."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), drain_seconds)
        except TimeoutError:
            log.error("turns.unsaved", extra=self._tags(count=self._queue.qsize()))
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self._held:  # the session ended before the prompt's words came: store the calls without them
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._release_held(None), drain_seconds)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                item = await (asyncio.wait_for(self._queue.get(), max(0.0, self._held_until - loop.time()))
                              if self._held else self._queue.get())
            except TimeoutError:  # no child turn came for the held calls: store them without one
                await self._guarded(self._release_held(None))
                continue
            await self._guarded(self._write(item))
            self._queue.task_done()

    async def _guarded(self, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception:  # reporting a flag or an alert failed: what it reports is stored
            log.exception("turns.report_failed", extra=self._tags())

    async def _write(self, item: Pending) -> None:
        if isinstance(item, PendingTurn):
            await self._write_turn(item)
        elif isinstance(item, PendingPromptFlag):
            await self._flag_prompt(item.reason)
        elif isinstance(item, PendingUsage):
            await self._stored(lambda: self._repository.add_usage(
                self._guild_id, self._session_id, item.tokens, item.cost_usd, total_tokens=item.total_tokens,
                turn_id=self._last_turn, at=item.at), "usage")
        elif isinstance(item, PendingEvent):
            if item.belongs_to == "prompt" and self._last_role != "child":
                if not self._held:
                    self._held_until = asyncio.get_running_loop().time() + HOLD_FOR_PROMPT_S
                self._held.append(item)  # its prompt is still to be written
            else:
                await self._write_event(item, self._last_turn)
        elif any(event.call_id == item.call_id for event in self._held):
            self._held = [dataclasses.replace(e, outcome=item.outcome) if e.call_id == item.call_id else e
                          for e in self._held]
        else:
            await self._stored(lambda: self._repository.set_event_outcome(
                self._guild_id, self._session_id, item.call_id, item.outcome), "outcome")

    async def _release_held(self, turn_id: int | None) -> None:
        held, self._held = self._held, []
        for event in held:
            await self._write_event(event, turn_id)

    async def _stored(self, write: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Run one write until it succeeds; None when it never can (session deleted, invalid row)."""
        delay = FIRST_RETRY_S
        while True:
            try:
                return await write()
            except LookupError:  # a moderator deleted this session meanwhile: nothing to attach it to
                log.warning("turns.session_deleted", extra=self._tags(what=what))
                return None
            except ValueError:  # the row itself is invalid: retrying can never succeed
                log.exception("turns.rejected", extra=self._tags(what=what))
                return None
            except Exception:
                log.exception("turns.write_failed", extra=self._tags(what=what, retry_in_s=delay))
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_S)

    async def _write_turn(self, turn: PendingTurn) -> None:
        row_id = await self._stored(lambda: self._repository.add_turn(self._guild_id, self._session_id,
                                                                      **_fields(turn)), f"turn:{turn.role}")
        if row_id is None:
            return
        self.stored += 1
        self._last_turn, self._last_role = row_id, turn.role
        if turn.role == "child":
            self._prompt.append((row_id, turn.started_at))
        elif turn.role == "tutor":
            self._reply_began = turn.started_at
            self._prompt = [(i, at) for i, at in self._prompt if at > turn.started_at]
        if turn.role == "child" and self._held:
            await self._release_held(row_id)
        if turn.flag_reason:
            self.flagged += 1
            log.warning("turns.flagged", extra=self._tags(turn_id=row_id, reason=turn.flag_reason))
            row = await self._turn_row(row_id)
            if row is not None:
                await self._on_flagged(row)

    async def _write_event(self, event: PendingEvent, turn_id: int | None) -> None:
        event_id = await self._stored(lambda: self._repository.add_event(
            self._guild_id, self._session_id, event.kind, event.name, turn_id=turn_id, call_id=event.call_id,
            category=event.category, reason=event.reason, outcome=event.outcome, at=event.at), f"event:{event.name}")
        log.info("turns.event", extra=self._tags(event=event.name, kind=event.kind, category=event.category,
                                                 turn_id=turn_id, outcome=event.outcome))
        if event_id is None or not event.alert:
            return
        turn = await self._turn_row(turn_id) if turn_id is not None else None
        if turn is not None and turn.flag_reason is None:
            # The child's words behind an alert are flagged: listed for moderators, never replayed as history.
            reason = f"alert: {event.category}" if event.category else "alert"
            if await self._stored(lambda: self._repository.flag_turn(self._guild_id, turn.id, reason), "flag"):
                self.flagged += 1
                turn = await self._turn_row(turn.id)
        row = next((e for e in await self._repository.session_events(self._guild_id, self._session_id)
                    if e.id == event_id), None)
        if row is not None:
            await self._on_alert(row, turn)

    async def _flag_prompt(self, reason: str) -> None:
        """Both sides of an unsafe exchange are flagged: the kid's prompt (spoken or typed, even when the block
        came after the reply had started) goes to the moderators too, and is never replayed as history."""
        since = self._reply_began
        for turn_id, began in self._prompt:
            if since is not None and began <= since:  # a late-closed prompt of the reply before
                continue
            turn = await self._turn_row(turn_id)
            if turn is None or turn.flagged:
                continue
            if await self._stored(lambda t=turn: self._repository.flag_turn(self._guild_id, t.id, reason), "flag"):
                self.flagged += 1
                log.warning("turns.flagged", extra=self._tags(turn_id=turn.id, reason=reason, prompt_of="blocked"))
                row = await self._turn_row(turn.id)
                if row is not None:
                    await self._on_flagged(row)

    async def _turn_row(self, turn_id: int) -> TurnRow | None:
        rows = await self._repository.get_turns(self._guild_id, self._session_id)
        return next((r for r in rows if r.id == turn_id), None)

    def _tags(self, **extra: Any) -> dict[str, Any]:
        return {"guild_id": self._guild_id, "session_id": self._session_id, **extra}


def _fields(turn: PendingTurn) -> dict[str, Any]:
    return {"role": turn.role, "text": turn.text, "started_at": turn.started_at, "ended_at": turn.ended_at,
            "speaker_ids": turn.speaker_ids, "typed": turn.typed, "speaker_name": turn.speaker_name,
            "interrupted": turn.interrupted, "flag_reason": turn.flag_reason}

"""`LiveSession`: one Gemini Live conversation that survives GoAway, dropped sockets and resumption.

Shape (LiveKit's "one supervisor owns the socket"): the public methods never block — `send_audio`,
`end_audio_stream` and `send_text` append to an outbox. One supervisor task owns the connection: it
runs a sender (drains the outbox) and a receiver (turns server messages into `bot.live.events`), and
when either ends it decides, in named methods, whether to reconnect or give up. This module is that
lifecycle and failure policy; the pieces it drives live in their own modules:

* `bot.live.connection`: dialling one websocket with the bot's setup, seeding it, closing it (`Dialler`);
* `bot.live.outbound`: the send path — outbox, replay ring, sender loop, what a reconnect replays;
* `bot.live.receiver`: the receive path — events published, the newest handle, GoAway, reply progress;
* `bot.live.frames`: reading server frames (the documented SDK shim: an unreadable frame is skipped);
* `bot.live.inbound`: what one server message means (its events and control signals);
* `bot.live.reply_watch`: what the model is doing (a reply in progress, handle coverage, runaway bounds);
* `bot.live.stream`: the ordered events the consumer sees, with the whole turns they complete;
* `bot.live.failures` (verdicts), `bot.live.options` (policy, setup, states, stats),
  `bot.live.buffers` (`HistoryTurn`, re-exported here).

A GoAway lets the reply in progress finish on the old socket (while `time_left` allows), then resumes
on a new one with a handle that covers that reply. No input is lost across a reconnect: audio queued
while disconnected is kept (bounded), and every message sent is kept until a `session_resumption_update`
covers it; unconfirmed messages are replayed on the new connection. Without a handle (a drop before the
first update, or a handle refused with 1007) the new connection starts fresh and is re-seeded with the
history plus the completed turns (capped by turns and characters). A first setup refused with 1007 (not
for the key) is tried once more without the fields the Gemini Developer API may not know for 3.8
(`SetupExtras.doubtful`); `setup_refusal` then says what was refused, for the operator.

Consume events with `async for event in session.events()`; it ends after `Failed` or `close()`.
Call the sync methods from the event loop's thread. The lifecycle is one `LiveState` (`state`), moved
only by `_set_state`, which checks `ALLOWED_TRANSITIONS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence

from google.genai import types

from bot.config import Settings
from bot.live.buffers import MAX_SEED_TURNS, HistoryTurn, Outgoing, cap_seed
from bot.live.connection import Connection, Dialler, StartFailed, close_connection
from bot.live.events import Failed, LiveEvent, Reconnected, Reconnecting, TurnTranscribed
from bot.live.failures import Verdict, classify_for, is_auth_problem, scrub
from bot.live.options import (
    NO_EXTRAS,
    LiveConnectOptions,
    LiveCounters,
    LiveState,
    LiveStats,
    SetupExtras,
    check_transition,
)
from bot.live.outbound import Outbound
from bot.live.receiver import Receiver
from bot.live.reply_watch import ReplyWatch, RunawayReply, watch_answers
from bot.live.stream import EventStream

log = logging.getLogger(__name__)

UNANSWERED_LIMIT = 2  # reconnects in a row for a server that takes input and never answers, then fail
DEFAULT_CONNECT_OPTIONS = LiveConnectOptions()

__all__ = ["HistoryTurn", "LiveConnectFailed", "LiveConnectOptions", "LiveSession", "LiveState", "LiveStats",
           "SetupExtras"]


class LiveConnectFailed(Exception):
    """`start()` could not open the first connection; the message is the plain-English reason.

    An operator's reason (it may name GEMINI_API_KEY or a close code), so not a `TutorError`: the
    registry tells the kid `bot.errors.TutorUnavailable` instead and sends this reason to the moderators.
    """

    def __init__(self, failure: Failed) -> None:
        self.failure = failure
        super().__init__(failure.reason)


class LiveSession:
    """One Gemini Live conversation; see the module docstring for the contract."""

    def __init__(self, settings: Settings, *, system_instruction: str, history: Sequence[HistoryTurn] = (),
                 extras: SetupExtras = NO_EXTRAS,
                 connect_options: LiveConnectOptions = DEFAULT_CONNECT_OPTIONS) -> None:
        self._settings = settings
        self._options = connect_options
        self._history: list[HistoryTurn] = list(history)
        self.id = uuid.uuid4().hex[:8]
        self._stream = EventStream(max_remembered=MAX_SEED_TURNS)  # only the newest turns can be re-seeded
        self._counters = LiveCounters()
        self._outbound = Outbound(connect_options, self._counters)
        self._watch = ReplyWatch(connect_options.max_reply_seconds)
        self._receiver = Receiver(self.id, watch=self._watch, counters=self._counters, stream=self._stream,
                                  outbound=self._outbound)
        self._dialler = Dialler(settings, system_instruction, extras, session_id=self.id, options=connect_options,
                                counters=self._counters)
        self._connection: Connection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task] = set()
        self._failures = 0
        self._state = LiveState.IDLE

    # public API -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (retrying transient failures) and start the supervisor; raises `LiveConnectFailed`."""
        if self._state is not LiveState.IDLE:
            raise RuntimeError(f"LiveSession.start() called while {self._state.name}")
        self._set_state(LiveState.CONNECTING, "start")
        verdict = Verdict("no answer yet", False)
        try:
            async with asyncio.timeout(self._options.start_timeout):
                connection = await self._dialler.dial_first(self._seed_turns())
        except TimeoutError:
            connection = None
            verdict = Verdict(f"Gemini did not finish setting up the connection within "
                              f"{self._options.start_timeout:g} s.", False)
        except StartFailed as failed:
            connection, verdict = None, failed.verdict
        if connection is None:
            failure = self._fail(verdict)
            await self.close()
            raise LiveConnectFailed(failure) from None
        if self._state is not LiveState.CONNECTING:  # closed while connecting: nobody will serve it
            await close_connection(connection, self._options.close_timeout)
            return
        self._connection = connection
        self._set_state(LiveState.READY, "connected")
        self._supervisor = asyncio.create_task(self._supervise(), name=f"live-{self.id}")

    def send_audio(self, pcm16k: bytes, *, urgent: bool = False) -> None:
        """Queue 16 kHz s16le mono input audio; never blocks, kept while reconnecting.

        `urgent`: the frame starts or ends a talk spurt, so it (and what is held before it) goes at once;
        other audio goes in `input_chunk_ms` messages (see `bot.live.outbound`).
        """
        if pcm16k and not self._state.ended:
            self._outbound.push(Outgoing("audio", audio=bytes(pcm16k)), urgent=urgent)

    def end_audio_stream(self) -> None:
        """Tell Gemini the kids stopped talking (after the silence tail); a reply usually follows."""
        if not self._state.ended:
            self._outbound.push(Outgoing("audio_end"))

    def send_text(self, text: str) -> None:
        """Queue typed text from a kid (`/tutor say`); the tutor answers it."""
        if text.strip() and not self._state.ended:
            self._outbound.push(Outgoing("text", text=text))

    def send_tool_response(self, responses: Sequence[types.FunctionResponse]) -> None:
        """Queue the results of a `ToolCall` (each `FunctionResponse` names the call's `id`)."""
        if responses and not self._state.ended:
            self._outbound.push(Outgoing("tool_response", responses=tuple(responses)))

    async def seed_history(self, turns: Sequence[HistoryTurn]) -> None:
        """Add earlier turns: before `start()` they are sent at connect; after it, as client content."""
        turns = tuple(cap_seed([t for t in turns if t.text.strip()]))
        if not turns:
            return
        self._history.extend(turns)
        if self._state is not LiveState.IDLE and not self._state.ended:
            self._outbound.push(Outgoing("history", turns=turns))

    def withhold_turn(self, role: str, text: str) -> None:
        """A completed turn was flagged later (an alert about a child's words): a fresh connection is never
        seeded with it. Flagged turns the session itself saw (safety blocks) are withheld already."""
        self._stream.withhold(role, text)

    async def events(self) -> AsyncIterator[LiveEvent]:
        """Every event in order; ends after `Failed` or when the session is closed. One consumer only."""
        async for event in self._stream.events():
            yield event

    def drain_pending_turns(self) -> list[TurnTranscribed]:
        """Completed turns still waiting in the event queue (after `close()`, when no one consumes it)."""
        turns = self._stream.drain_turns()
        if self._state is LiveState.CLOSED:
            self._stream.end()  # keep `events()` ending for anyone still iterating
        return turns

    @property
    def state(self) -> LiveState:
        """Where the session is in its life (read-only; see `bot.live.options.ALLOWED_TRANSITIONS`)."""
        return self._state

    @property
    def stats(self) -> LiveStats:
        """Current figures (a snapshot)."""
        return self._counters.snapshot(connected=self._state.connected, dropped_bytes=self._outbound.dropped_bytes)

    @property
    def server_session_id(self) -> str | None:
        """The id Gemini gave the current connection's session in its setupComplete (None if it gave none)."""
        conn = self._connection
        return getattr(conn.session, "session_id", None) if conn is not None else None

    @property
    def setup_refusal(self) -> str | None:
        """Why Gemini refused the full setup, when the session runs without its doubtful fields (None: accepted)."""
        return self._dialler.setup_refusal

    @property
    def last_input_sent_at(self) -> float | None:
        """When input audio last went out (monotonic), or None before any."""
        return self._counters.last_input_sent_at

    async def close(self) -> None:
        """Stop everything and release the socket and client; safe to call more than once."""
        if self._state is LiveState.CLOSED:
            return
        self._set_state(LiveState.CLOSED, "close")
        if self._supervisor is not None and self._supervisor is not asyncio.current_task():
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        await self._cancel(self._tasks)
        if self._connection is not None:
            await close_connection(self._connection, self._options.close_timeout)
            self._connection = None
        await self._dialler.close()
        self._stream.flush()
        self._stream.end()
        log.info("live.closed", extra={"live_session": self.id})

    # connection -------------------------------------------------------------------------------
    def _seed_turns(self) -> list[HistoryTurn]:
        """The newest turns that fit the seed caps (`bot.live.buffers.cap_seed`)."""
        return cap_seed(self._history + self._stream.completed_turns)

    async def _open(self, handle: str | None) -> Connection:
        """Dial the next connection: resume `handle`, or start fresh seeded with the turns so far."""
        return await self._dialler.open(handle, self._seed_turns() if handle is None else [])

    # supervisor -------------------------------------------------------------------------------
    async def _supervise(self) -> None:
        """Own the connection: serve it until it ends, then replace it or give up."""
        try:
            while self._state is LiveState.READY:
                conn = self._connection
                assert conn is not None  # READY always has one
                verdict = await self._serve(conn)
                if verdict is None:  # GoAway: already replaced by _serve
                    continue
                if self._state.ended:  # _serve gave up on the session
                    await close_connection(conn, self._options.close_timeout)
                    return
                self._connection = None
                self._set_state(LiveState.RECONNECTING, verdict.reason)
                await close_connection(conn, self._options.close_timeout)
                if not await self._handle_connection_error(conn, verdict):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must end the conversation visibly, not hang it
            log.exception("live.supervisor_crashed", extra={"live_session": self.id})
            self._fail(Verdict(f"The Gemini connection stopped unexpectedly ({type(exc).__name__}).", False))
        finally:
            await self._cancel(self._tasks)

    async def _serve(self, conn: Connection) -> Verdict | None:
        """Run sender and receiver; return why the connection ended, or None after a GoAway handover."""
        self._receiver.go_away.clear()
        send = self._spawn(self._outbound.run(conn), "send")
        recv = self._spawn(self._receiver.run(conn), "recv")
        watch = self._spawn(watch_answers(conn, self._counters, self._options.answer_timeout), "answers")
        restart = self._spawn(self._receiver.go_away.wait(), "restart")
        done, _ = await asyncio.wait({send, recv, watch, restart}, return_when=asyncio.FIRST_COMPLETED)
        await self._cancel({restart})
        if restart in done and not (recv.done() or send.done() or watch.done()):
            verdict = await self._drain_after_go_away(conn, send, recv)
            if verdict is None:
                await self._cancel({watch})
                return await self._hand_over(conn, send, recv)
        if watch in done:
            watch.exception()  # Unanswered: retrieved here, or asyncio logs "exception was never retrieved"
            await self._cancel({send, recv})
            return self._unanswered(conn)
        await self._cancel({send, watch})
        if send in done and not recv.done():  # the receiver usually has the close code: give it a moment
            await asyncio.wait({recv}, timeout=0.5)
        await self._cancel({recv})
        error = next((t.exception() for t in (recv, send) if t.done() and not t.cancelled() and t.exception()), None)
        if isinstance(error, RunawayReply):
            return Verdict("Gemini's reply would not stop", False)
        return classify_for(self._settings, error) if error else Verdict("the connection ended", False)

    def _unanswered(self, conn: Connection) -> Verdict:
        """The server stopped answering: reconnect, and after UNANSWERED_LIMIT times in a row give up."""
        self._watch.unanswered += 1
        seconds = self._options.answer_timeout
        log.warning("live.unanswered", extra={"live_session": self.id, "connection": conn.number,
                                              "times": self._watch.unanswered})
        if self._watch.unanswered >= UNANSWERED_LIMIT:
            self._fail(Verdict(f"Gemini stopped answering: it took the children's input and sent nothing for "
                               f"{seconds:g} s, {self._watch.unanswered} times in a row.", False))
        return Verdict(f"Gemini sent nothing for {seconds:g} s after the children spoke", False)

    async def _drain_after_go_away(self, conn: Connection, send: asyncio.Task, recv: asyncio.Task) -> Verdict | None:
        """GoAway: keep serving the old socket until the reply in progress is over and a handle covers it.

        Returns None when it is time to hand over (that point, or the deadline `time_left` allows), or the
        verdict if the old socket ended first (the normal reconnect path then resumes).
        """
        self._set_state(LiveState.HANDING_OVER, "go_away")
        assert conn.go_away_deadline is not None
        while not self._watch.ready_to_hand_over:
            left = conn.go_away_deadline - time.monotonic()
            if left <= 0:
                log.warning("live.go_away_deadline", extra={"live_session": self.id,
                                                            "replying": self._watch.replying})
                return None
            self._receiver.progress.clear()
            progress = self._spawn(self._receiver.progress.wait(), "progress")
            done, _ = await asyncio.wait({send, recv, progress}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            await self._cancel({progress})
            if send in done or recv in done:
                return Verdict("the connection closed after GoAway", False)
        return None

    async def _hand_over(self, old: Connection, send: asyncio.Task, old_recv: asyncio.Task) -> Verdict | None:
        """Stop sending on the old socket, resume on a new one with the newest handle, replay the rest."""
        await self._cancel({send})
        old.replacing = True
        self._counters.reconnects += 1
        self._stream.emit(Reconnecting("go_away", 1))
        log.info("live.reconnecting", extra={"live_session": self.id, "reason": "go_away", "attempt": 1})
        try:
            new = await self._open(self._receiver.handle)
        except Exception as exc:
            await self._cancel({old_recv})
            return classify_for(self._settings, exc)  # the normal failure path takes over (and closes the old socket)
        await self._cancel({old_recv})
        self._spawn(close_connection(old, self._options.close_timeout), "close-old")  # the server closes it anyway
        self._connection = new
        self._set_state(LiveState.READY, "handed over")
        self._after_reconnect(new, attempt=1)
        return None

    async def _handle_connection_error(self, conn: Connection | None, verdict: Verdict) -> bool:
        """Count the failure and reconnect with backoff; False once the session has failed."""
        while True:
            self._counters.last_error = verdict.reason
            if verdict.permanent and self._receiver.handle is not None and not is_auth_problem(verdict):
                # A handle can expire or be refused: forget it and start fresh (re-seeded) instead.
                log.warning("live.resume_refused", extra={"live_session": self.id, "reason": verdict.reason})
                self._receiver.handle = None
            elif verdict.permanent:
                self._fail(verdict)
                return False
            if conn is not None and time.monotonic() - conn.connected_at >= self._options.stable_after:
                self._failures = 0  # a stable connection earns a fresh retry budget
            conn = None
            self._failures += 1
            if self._failures > self._options.max_retries:
                tries = self._failures - 1  # the first failure was the drop itself
                self._fail(Verdict(f"Lost the connection to Gemini after {tries} tries (last problem: "
                                   f"{verdict.reason}).", False, verdict.code))
                return False
            self._counters.reconnects += 1
            self._stream.emit(Reconnecting(verdict.reason, self._failures))
            log.warning("live.reconnecting", extra={"live_session": self.id, "reason": verdict.reason,
                                                    "attempt": self._failures})
            await asyncio.sleep(self._options.retry_delay(self._failures))
            try:
                new = await self._open(self._receiver.handle)
            except Exception as exc:
                verdict = classify_for(self._settings, exc)
                continue
            self._connection = new
            self._set_state(LiveState.READY, "reconnected")
            self._after_reconnect(new, attempt=self._failures)
            return True

    def _after_reconnect(self, conn: Connection, attempt: int) -> None:
        """Close the turn the old connection cut, put unconfirmed messages back in front, let input flow."""
        if conn.resumed:
            self._counters.resumed_count += 1
        self._watch.on_reconnect()
        self._receiver.drop_held_audio()
        replay = self._outbound.requeue_unconfirmed(resumed=conn.resumed,
                                                    last_turn_complete_at=self._watch.last_reply_end)
        self._stream.cut_by_reconnect(replayed_since=replay.since)
        self._stream.emit(Reconnected(resumed=conn.resumed, attempt=attempt, replayed_ms=replay.queued_ms))
        log.info("live.reconnected", extra={"live_session": self.id, "connection": conn.number,
                                            "resumed": conn.resumed, "replayed_ms": round(replay.replayed_ms),
                                            "queued_ms": round(replay.queued_ms)})

    # failure ----------------------------------------------------------------------------------
    def _fail(self, verdict: Verdict) -> Failed:
        key = self._settings.gemini_api_key.get_secret_value()
        failure = Failed(scrub(verdict.reason, key), permanent=verdict.permanent, code=verdict.code)
        if not self._state.ended:  # once only, and not after close()
            self._set_state(LiveState.FAILED, failure.reason)
            self._counters.last_error = failure.reason
            log.error("live.failed", extra={"live_session": self.id, "reason": failure.reason, "code": verdict.code})
            self._stream.flush()
            self._stream.emit(failure)
        return failure

    # state ------------------------------------------------------------------------------------
    def _set_state(self, new: LiveState, reason: str) -> None:
        """The only writer of `_state`: refuses moves `ALLOWED_TRANSITIONS` lacks, logs the rest."""
        check_transition(self._state, new)
        log.info("live.state", extra={"live_session": self.id, "from_state": self._state.value,
                                      "to_state": new.value, "reason": reason})
        self._state = new

    # tasks ------------------------------------------------------------------------------------
    def _spawn(self, coro: object, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"live-{self.id}-{name}")  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _cancel(tasks: set[asyncio.Task]) -> None:
        pending = [t for t in tasks if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

"""One guild's running tutor: voice in → Gemini Live → voice out, every turn stored.

`Conversation` wires the stages (DESIGN.md §1) and owns their lifecycle: the input pump (`bot.input_pump`:
kids' audio through the mixer to Live), the Live event consumer and the watchdog (rules in `bot.limits`). The
voice connection and its repairs are `bot.voice_link`; naming and storing turns is `bot.turn_log` (writer:
`bot.turns`). It knows nothing of
slash commands; cogs hear about it through `ConversationObserver`. Runs in tests with a fake voice client
and a fake Live server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from bot import endings
from bot.audio.mixer import Mixer
from bot.audio.playback import MAX_QUEUED_MS, PlaybackSource
from bot.config import Settings
from bot.conversation_types import ConversationObserver, ConversationResult, ConversationStatus, StartRequest
from bot.cost import Prices
from bot.cost_meter import CostMeter
from bot.goodbye import TutorVoice
from bot.input_pump import InputPump
from bot.kid_names import names_to_tell_the_tutor
from bot.limits import LimitRules, StopReason, WatchdogReading
from bot.live import events as ev
from bot.live.session import HistoryTurn, LiveSession
from bot.live_setup import tutor_setup
from bot.participants import in_call
from bot.prompting import app_note, typed_message
from bot.storage.repository import Repository
from bot.tools import ToolCalls
from bot.turn_log import TurnLog
from bot.turn_taking import turn_pause_ms
from bot.voice_link import VoiceConnector, VoiceLink

log = logging.getLogger(__name__)

WATCHDOG_INTERVAL_S = 1.0
MINUTES_REFRESH_TICKS = 15  # the daily-minutes query runs every 15 watchdog ticks
WRITE_DRAIN_TIMEOUT_S = 30.0  # at stop, how long queued turns may wait for a locked or slow database
PLAYBACK_MAX_QUEUED_MS = MAX_QUEUED_MS  # reply audio beyond this is dropped (tests lower it)
# The app's steering notes travel as `bot.prompting.app_note`s: a form kid input can never produce. They hold only
# the app's own words: the topic is named (fenced, as data) in the system instruction, never inside a note.
SAFETY_REDIRECT = app_note(
    "Your last reply was stopped by a safety filter. In one short, "
    "kind sentence say you can't talk about that, suggest asking a grown-up, then offer to get back to today's topic."
)
GREETING_PROMPT = app_note(
    "The call has just started. Say hello, say in one short sentence that "
    "you are a computer helper, not a real person, and that grown-ups can read what is said, then ask one fun "
    "question about today's topic."
)
GOODBYE_PROMPT = app_note("Time is up because {reason}. Say a warm goodbye in one short sentence.")

LiveFactory = Callable[..., LiveSession]

__all__ = ["Conversation", "LiveFactory", "VoiceConnector"]


class Conversation:
    """One guild's running tutor: owns the voice client, the Live session and their tasks."""

    def __init__(self, request: StartRequest, *, session_id: int, settings: Settings, repository: Repository,
                 observers: Sequence[ConversationObserver], daily_minutes: int, max_session_minutes: int,
                 daily_budget_usd: float = float("inf"), spent_today_usd: float = 0.0,
                 turn_pause_setting_ms: int | None = None, seeded_from: frozenset[int] = frozenset(),
                 on_closed: Callable[[Conversation], None] = lambda _: None) -> None:
        self.request = request
        self.seeded_from = seeded_from  # members whose stored words seeded its history (see `involves`)
        self.guild_id = request.guild_id
        self.session_id = session_id
        self.voice_channel = request.voice_channel
        self.level = request.level
        self.age = request.age
        self.started_at = datetime.now(UTC)
        self.started_mono = time.monotonic()
        self.daily_minutes = daily_minutes
        self.max_session_minutes = max_session_minutes
        self.daily_budget_usd = daily_budget_usd
        self._settings = settings
        self._repository = repository
        self._observers = observers
        self._on_closed = on_closed
        self.turn_pause_ms = turn_pause_ms(turn_pause_setting_ms, request.age)  # the pause that ends a kid's turn
        self._mixer = Mixer(tail_ms=self.turn_pause_ms)
        self._playback = PlaybackSource(max_queued_ms=PLAYBACK_MAX_QUEUED_MS)
        self._turns = TurnLog(repository, self.guild_id, session_id, self._mixer, started_mono=self.started_mono,
                              on_flagged=lambda row: self._notify("on_turn_flagged", row),
                              on_alert=self._on_alert,
                              chosen_names=request.kid_names)
        self._input = InputPump(self._mixer, on_heard=self._turns.heard, tags=self._log_tags())
        self._rules = LimitRules()
        self._minutes_used_today = 0.0
        self.cost = CostMeter(Prices.from_settings(settings), spent_today_usd=spent_today_usd)
        self._ticks = 0
        self._voice: VoiceLink | None = None  # set by start()
        self._tasks: list[asyncio.Task[None]] = []
        self._ended = asyncio.Event()
        self._stop_lock = asyncio.Lock()
        self._result: ConversationResult | None = None
        self._stopper: asyncio.Task[ConversationResult] | None = None  # owned here; stop() is idempotent
        self._tutor_voice = TutorVoice(self._playback)
        self._tools = ToolCalls(respond=self._send_tool_results, record=self._turns.tool_call,
                                outcome=self._turns.tool_outcome, end=self._end_after_goodbye,
                                call_off_end=self._call_off_end)
        self._ending: asyncio.Task[None] | None = None  # end_conversation: waiting for the goodbye to play
        self.live: LiveSession | None = None

    # ----- lifecycle -------------------------------------------------------------------------------

    async def start(self, connect: VoiceConnector, live_factory: LiveFactory, history: Sequence[HistoryTurn]) -> None:
        """Connect Live first (cheap to undo), then voice; on any failure undo what was done."""
        names = self.kid_names()
        instruction, extras = tutor_setup(self.level, self.age, names, language=self.request.language,
                                          turn_pause_ms=self.turn_pause_ms)
        self._voice = VoiceLink(self.voice_channel, connect, self._input.on_kid_audio, self._playback,
                                tags=self._log_tags(), on_kid_left=self._input.on_kid_left)
        self.live = live_factory(self._settings, system_instruction=instruction, history=history, extras=extras)
        try:
            await self.live.start()
            await self._voice.open()
        except BaseException:
            await self._teardown()
            raise
        self._turns.start()
        self._tasks = [asyncio.create_task(coro, name=f"{name}:{self.guild_id}") for name, coro in (
            ("pump", self._input.run(self._voice, self.live)), ("events", self._consume_live_events()),
            ("watchdog", self._watchdog()))]
        if self.request.greet:  # the tutor speaks first: hello, and that it is a computer grown-ups can read
            self.live.send_text(GREETING_PROMPT)
        log.info("conversation.started", extra=self._log_tags(level=self.level.name, age=self.age))

    def kid_names(self) -> list[str]:
        """The names the tutor uses: those the people (not bots) in the voice channel when it starts chose
        (`/tutor name`). A kid without one is not named: their display name may be a parent's."""
        members = getattr(self.voice_channel, "members", None) or []
        present = [m.id for m in members if not getattr(m, "bot", False)]
        return names_to_tell_the_tutor(present, self.request.kid_names)

    async def stop(self, reason: str) -> ConversationResult:
        """End once: store what is pending, close everything in reverse order, tell the observers."""
        async with self._stop_lock:
            if self._result is not None:
                return self._result
            tasks = [*self._tasks, *([self._ending] if self._ending not in (None, asyncio.current_task()) else [])]
            for task in tasks:  # never our own: self-stops run in `_stopper`
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._teardown()
            try:
                await self._repository.end_session(self.guild_id, self.session_id, reason)
            except Exception:  # the row is closed at the next start-up ("bot restarted"); end cleanly anyway
                log.exception("conversation.end_write_failed", extra=self._log_tags())
            self._result = ConversationResult(self.guild_id, self.session_id, self.voice_channel.id,
                                              time.monotonic() - self.started_mono, self._turns.stored, reason)
            self._ended.set()
            self._on_closed(self)
        log.info("conversation.ended", extra=self._log_tags(reason=reason, turns=self._turns.stored))
        await self._notify("on_ended", self._result)
        return self._result

    def _stop_soon(self, reason: str) -> None:
        """Stop from inside one of our own tasks: stop() cancels those, so it runs in a task of its own."""
        if self._stopper is None:
            self._stopper = asyncio.create_task(self.stop(reason), name=f"stop:{self.guild_id}")

    def involves(self, member_id: int) -> bool:
        """This member started the conversation, is in the call, was heard or typed in it, or their stored words
        seeded its history (they are in its Live context now, and re-sent on a fresh connection)."""
        return (member_id == self.request.starter_id or member_id in self._turns.names
                or member_id in self.seeded_from or in_call(member_id, self.voice_channel))

    async def notify_started(self) -> None:
        """Tell the observers (called by the registry once the conversation is registered)."""
        await self._notify("on_started")

    async def wait_ended(self) -> ConversationResult:
        """Block until the conversation has ended (by command, watchdog or failure)."""
        await self._ended.wait()
        assert self._result is not None
        return self._result

    async def _teardown(self) -> None:
        """Close Live (storing its last partial turns), then the voice side; each step may fail alone."""
        if self.live is not None:
            with contextlib.suppress(Exception):
                await self.live.close()
            for event in self.live.drain_pending_turns():
                self._turns.record(event)
        await self._turns.close(WRITE_DRAIN_TIMEOUT_S)
        if self._voice is not None:
            await self._voice.close()
        self._playback.cleanup()

    # ----- input: kids → Live (their voices go through `bot.input_pump`) ----------------------------

    def rename(self, member_id: int, chosen: str | None) -> None:
        """A kid set or cleared their chosen name during the call (`/tutor name`)."""
        self._turns.rename(member_id, chosen)

    async def say(self, author_id: int, author_name: str, text: str) -> None:
        """Typed input from `/tutor say`, stored as the author's turn and sent to the tutor. The tutor is told
        the kid's chosen name only, like in its instruction: `author_name` may be a parent's display name."""
        assert self.live is not None
        self._turns.typed(author_id, author_name, text)
        self.live.send_text(typed_message(self._turns.chosen_name(author_id) or "", text))

    # ----- output: Live → kids and storage ---------------------------------------------------------

    async def _consume_live_events(self) -> None:
        """Route every Live event; a `Failed` ends the conversation with its reason.

        One event that cannot be handled is logged and skipped: a dead consumer would leave the kids
        talking to a tutor that never answers.
        """
        assert self.live is not None
        async for event in self.live.events():
            try:
                if await self._on_live_event(event):
                    return
            except Exception:
                log.exception("conversation.event_failed", extra=self._log_tags(event=type(event).__name__))

    async def _on_live_event(self, event: ev.LiveEvent) -> bool:
        """Handle one event; True once the session has failed and nothing more will come."""
        assert self.live is not None
        match event:
            case ev.AudioChunk(pcm=pcm):
                self._playback.feed(pcm)
                self._tutor_voice.reply_audio()
            case ev.Interrupted():
                dropped = self._playback.flush()
                log.debug("conversation.barge_in", extra=self._log_tags(dropped_ms=round(dropped)))
            case ev.GenerationComplete():  # the reply's end: turn_complete only follows once it played out
                self._reply_ended()
            case ev.TurnComplete(blocked=blocked, reason=reason):
                self._reply_ended()
                if blocked:
                    self._playback.flush()
                    self._turns.flag_prompt(reason or "blocked")  # both sides of the exchange
                    self.live.send_text(SAFETY_REDIRECT)
            case ev.TurnTranscribed():
                self._turns.record(event)
                if event.role == "child":
                    self._tools.child_spoke()
            case ev.Failed(reason=reason):
                await self._notify("on_failed", reason)
                self._stop_soon(endings.LIVE_FAILED.format(detail=reason))
                return True
            case ev.Usage():
                self._turns.usage(*self.cost.add(event))
            case ev.ToolCall(calls=calls):
                self._tools.on_calls(calls)
            case ev.ToolCallCancelled(ids=ids):
                self._tools.on_cancelled(ids)
            case ev.Reconnecting() | ev.Reconnected():
                log.info("conversation.live_reconnect", extra=self._log_tags(event=type(event).__name__))
        return False

    def _reply_ended(self) -> None:
        """All of the reply's audio is in (generation_complete, or turn_complete for a reply without it):
        let playback finish it, and wake a goodbye waiting for it."""
        self._playback.end_of_turn()
        self._tutor_voice.reply_ended()

    # ----- watchdog --------------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        """Once a second: limits, people in the channel, voice still there, listener still alive."""
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            try:
                reason = await self._check_once()
            except Exception:
                log.exception("conversation.watchdog_error", extra=self._log_tags())
                continue
            if reason is not None:
                if reason.budget:
                    self._turns.budget_stop(reason.text)
                if reason.goodbye:
                    await self._say_goodbye(reason.spoken or reason.text)
                self._stop_soon(reason.text)
                return

    async def _check_once(self) -> StopReason | None:
        self._ticks += 1
        if self._ticks % MINUTES_REFRESH_TICKS == 1:
            self._minutes_used_today = await self._repository.minutes_used_today(
                self.guild_id, time_zone=self.request.time_zone)
            session_cost = self.cost.cost_usd
            spent = (await self._repository.usage_today(self.guild_id, time_zone=self.request.time_zone)).cost_usd
            self.cost.read_spend(spent, session_cost_then=session_cost)
        assert self._voice is not None
        connected = await self._voice.check()
        channel = getattr(self._voice.client, "channel", None)
        members = getattr(channel, "members", []) if channel is not None else []
        return self._rules.check(WatchdogReading(
            now=time.monotonic(), started_at=self.started_mono, voice_connected=connected,
            in_original_channel=channel is None or channel.id == self.voice_channel.id,
            humans_in_channel=sum(1 for m in members if not m.bot),
            max_session_minutes=self.max_session_minutes, minutes_used_today=self._minutes_used_today,
            daily_minutes=self.daily_minutes, spent_today_usd=self.cost.spent_today_usd,
            daily_budget_usd=self.daily_budget_usd))

    async def _say_goodbye(self, reason: str) -> None:
        """Let the tutor say bye out loud, waiting for its turn to finish and play out (bounded)."""
        assert self.live is not None
        waiting = asyncio.ensure_future(self._tutor_voice.after_prompted_goodbye())
        self.live.send_text(GOODBYE_PROMPT.format(reason=reason))
        await waiting

    # ----- tools: what the tutor asks the bot to do --------------------------------------------------

    async def _on_alert(self, event: Any, turn: Any) -> None:
        """alert_grown_up was stored: the child's words behind it are flagged now, so a fresh Live connection is
        never seeded with them; then the moderators are told."""
        if turn is not None and self.live is not None:
            self.live.withhold_turn(turn.role, turn.text)
        await self._notify("on_alert", event, turn)

    def _send_tool_results(self, responses: list[Any]) -> None:
        assert self.live is not None
        self.live.send_tool_response(responses)

    def _end_after_goodbye(self, reason: str) -> None:
        """end_conversation: the call ends once the tutor's goodbye has been said and played."""
        if self._ending is None or self._ending.done():
            self._ending = asyncio.create_task(self._finish_after_goodbye(reason), name=f"ending:{self.guild_id}")

    async def _finish_after_goodbye(self, reason: str) -> None:
        await self._tutor_voice.until_goodbye_done()
        self._stop_soon(endings.tutor_ended(reason))

    def _call_off_end(self) -> None:
        """The model withdrew its end_conversation (a child spoke again): the call goes on."""
        if self._ending is not None and not self._ending.done():
            self._ending.cancel()
        self._ending = None

    # ----- reporting -------------------------------------------------------------------------------

    def status(self) -> ConversationStatus:
        """A snapshot of the live figures; cheap, no I/O."""
        stats = self._voice.receive_stats if self._voice is not None else None
        live_stats = self.live.stats if self.live is not None else None
        latencies = list(self._input.latency_ms)
        reply = list(getattr(live_stats, "response_latency_ms", []) or [])
        return ConversationStatus(
            guild_id=self.guild_id, session_id=self.session_id, channel_id=self.voice_channel.id,
            channel_name=self.voice_channel.name, level_title=self.level.title, age=self.age,
            starter_name=self.request.starter_name, started_at=self.started_at,
            uptime_s=time.monotonic() - self.started_mono, speakers=list(self._turns.names.values()),
            turns=self._turns.stored, flagged_turns=self._turns.flagged,
            reconnects=getattr(live_stats, "reconnects", 0),
            live_connected=bool(getattr(live_stats, "connected", False)),
            packets_received=getattr(stats, "packets_received", 0),
            packets_dropped=getattr(stats, "dropped_unknown_ssrc", 0) + getattr(stats, "dropped_malformed", 0),
            packets_concealed=getattr(stats, "concealed", 0),
            playback_buffered_ms=self._playback.buffered_ms, underruns=self._playback.underruns,
            input_latency_ms=_percentile(latencies, 95), reply_latency_ms=statistics.median(reply) if reply else None,
            minutes_used_today=self._minutes_used_today, daily_minutes=self.daily_minutes,
            session_cost_usd=self.cost.cost_usd, session_tokens=self.cost.total_tokens,
            spent_today_usd=self.cost.spent_today_usd, daily_budget_usd=self.daily_budget_usd,
            max_session_minutes=self.max_session_minutes)

    async def _notify(self, hook: str, *args: Any) -> None:
        for observer in self._observers:
            method = getattr(observer, hook, None)
            if method is None:
                continue
            try:
                await method(self, *args)
            except Exception:
                log.exception("conversation.observer_error", extra=self._log_tags(hook=hook))

    def _log_tags(self, **extra: Any) -> dict[str, Any]:
        return {"guild_id": self.guild_id, "session_id": self.session_id, **extra}


def _percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]

"""The per-bot registry of tutor conversations (at most one per guild): what the cogs call.

`Conversations.start/stop/say` check the limits and hand over to `bot.conversation.Conversation`; the public
shapes (`StartRequest`, `ConversationStatus`, …) live in `bot.conversation_types` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Coroutine, Sequence
from typing import Any

from bot import endings, timezones
from bot.config import Settings
from bot.conversation import Conversation, LiveFactory
from bot.conversation_types import ConversationObserver, ConversationResult, ConversationStatus, StartRequest
from bot.errors import (
    AlreadyRunning,
    DailyBudgetSpent,
    DailyLimitReached,
    NotInCall,
    NotRunning,
    StartStopped,
    TextTooLong,
    TutorError,
    TutorUnavailable,
)
from bot.history import seedable
from bot.limits import budget_spent
from bot.live.session import LiveConnectFailed, LiveSession
from bot.participants import in_call, may_type, participants
from bot.storage.models import TurnRow, storable_text
from bot.storage.repository import Repository
from bot.voice_link import VoiceConnector, connect_voice

__all__ = [
    "SAY_LIMIT", "Conversation", "ConversationObserver", "ConversationResult", "ConversationStatus",
    "Conversations", "StartRequest", "connect_voice",
]

SAY_LIMIT = 500
STOP_WAIT_S = 10.0  # how long /tutor stop waits for a start it called off to undo itself
HISTORY_TURNS = 20


class _Starting:
    """A /tutor start still connecting; `/tutor stop` can call it off (the start then raises `StartStopped`)."""

    def __init__(self, request: StartRequest) -> None:
        self.request = request
        self.session_id = 0
        self.seeded_from: frozenset[int] = frozenset()  # whose stored words its history carries
        self._task: asyncio.Future[None] | None = None
        self.stopped = False
        self.reason = endings.STOPPED_BY_COMMAND  # why it was called off (a command, or shutdown)
        self._done = asyncio.Event()

    async def run(self, starting: Coroutine[Any, Any, None]) -> None:
        """Run the connecting part; raises `StartStopped` if `stop()` called it off."""
        if self.stopped:
            starting.close()
            raise StartStopped
        self._task = asyncio.ensure_future(starting)
        try:
            await self._task
        except asyncio.CancelledError:
            if self.stopped:
                raise StartStopped from None
            raise
        finally:
            self._done.set()

    async def stop(self, reason: str) -> ConversationResult:
        """Call the start off and wait (bounded) until it has undone what it did."""
        self.stopped, self.reason = True, reason
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_WAIT_S):
                    await self._done.wait()
        return ConversationResult(self.request.guild_id, self.session_id, self.request.voice_channel.id, 0.0, 0,
                                  reason)


class Conversations:
    """The per-bot registry: at most one conversation per guild."""

    def __init__(self, *, settings: Settings, repository: Repository, connect: VoiceConnector = connect_voice,
                 live_factory: LiveFactory = LiveSession) -> None:
        self._settings = settings
        self._repository = repository
        self._connect = connect
        self._live_factory = live_factory
        self._running: dict[int, Conversation] = {}
        self._starting: dict[int, _Starting] = {}  # guilds whose /tutor start is still connecting
        self._observers: list[ConversationObserver] = []

    def add_observer(self, observer: ConversationObserver) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: ConversationObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def get(self, guild_id: int) -> Conversation | None:
        return self._running.get(guild_id)

    def involves(self, guild_id: int, member_id: int) -> bool:
        """This member takes part in the guild's conversation: the running one (`Conversation.involves`), or a
        start still connecting that they asked for or whose voice channel they are in (its session row exists
        already, and their words will follow)."""
        if (conversation := self._running.get(guild_id)) is not None:
            return conversation.involves(member_id)
        starting = self._starting.get(guild_id)
        return starting is not None and (member_id == starting.request.starter_id or member_id in starting.seeded_from
                                         or in_call(member_id, starting.request.voice_channel))

    async def start(self, request: StartRequest) -> Conversation:
        """Check the limits, open the session row, connect; the guild's slot is held while starting."""
        guild_id = request.guild_id
        if (running := self._running.get(guild_id)) is not None:
            raise AlreadyRunning(running.voice_channel.mention)
        if guild_id in self._starting:
            raise AlreadyRunning(request.voice_channel.mention)
        starting = self._starting[guild_id] = _Starting(request)
        try:
            settings = await self._repository.get_settings(guild_id)
            request = dataclasses.replace(request, time_zone=settings.time_zone,
                                          kid_names=await self._repository.member_names(guild_id))
            if await self._repository.minutes_used_today(guild_id, time_zone=request.time_zone) \
                    >= settings.daily_minutes:
                raise DailyLimitReached(settings.daily_minutes, timezones.resets(request.time_zone))
            spent = (await self._repository.usage_today(guild_id, time_zone=request.time_zone)).cost_usd
            if budget_spent(spent, settings.daily_budget_usd):
                raise DailyBudgetSpent(timezones.resets(request.time_zone))
            candidates = await self._repository.recent_turns_for_level(
                guild_id, request.level.name, limit=HISTORY_TURNS,
                participants=participants(request.voice_channel, also=[request.starter_id]))
            history = seedable(candidates)
            starting.seeded_from = await self._seeded_from(guild_id, candidates) if history else frozenset()
            session_id = await self._repository.start_session(
                guild_id, request.voice_channel.id, request.starter_id, request.starter_name,
                request.level.name, request.age, language=request.language.code)
            conversation = Conversation(request, session_id=session_id, settings=self._settings,
                                        repository=self._repository, observers=self._observers,
                                        daily_minutes=settings.daily_minutes,
                                        max_session_minutes=settings.max_session_minutes,
                                        daily_budget_usd=settings.daily_budget_usd, spent_today_usd=spent,
                                        turn_pause_setting_ms=settings.turn_pause_ms,
                                        seeded_from=starting.seeded_from, on_closed=self._forget)
            starting.session_id = session_id
            try:
                await starting.run(conversation.start(self._connect, self._live_factory, history))
                if starting.stopped:  # the stop came just as the start finished: end it like any stop
                    await conversation.stop(starting.reason)
                    raise StartStopped
            except BaseException as exc:
                stopped = isinstance(exc, StartStopped)
                # Live's reason is an operator's (a key, a quota, a close code): the kid is told kindly instead.
                refusal = TutorUnavailable(exc.failure.reason) if isinstance(exc, LiveConnectFailed) else exc
                detail = refusal.detail if isinstance(refusal, TutorError) else None
                await self._repository.end_session(guild_id, session_id,
                                                   starting.reason if stopped else endings.failed_to_start(detail))
                if refusal is not exc:
                    raise refusal from exc
                raise
            self._running[guild_id] = conversation
        finally:
            del self._starting[guild_id]
        await conversation.notify_started()
        return conversation

    async def _seeded_from(self, guild_id: int, turns: Sequence[TurnRow]) -> frozenset[int]:
        """Every member whose stored words the history may carry: who spoke or typed in those turns, and who
        started their sessions (erasing a member takes their sessions whole). While the conversation runs, its
        Live context holds those words, and each fresh connection is seeded with them again: erasing any of
        these members must wait until it has ended (`involves`)."""
        members = {member for turn in turns for member in turn.speaker_ids}
        for session_id in {turn.session_id for turn in turns}:
            if (session := await self._repository.get_session(guild_id, session_id)) is not None:
                members.add(session.starter_id)
        return frozenset(members)

    async def stop(self, guild_id: int, reason: str = endings.STOPPED_BY_COMMAND) -> ConversationResult:
        conversation = self._running.get(guild_id)
        if conversation is None and (starting := self._starting.get(guild_id)) is not None:
            return await starting.stop(reason)  # still connecting (Gemini may be slow to answer): call it off
        if conversation is None:
            raise NotRunning
        return await conversation.stop(reason)

    def rename(self, guild_id: int, member_id: int, chosen: str | None) -> None:
        """Pass a chosen name (or its removal) to the guild's running conversation, if there is one."""
        conversation = self._running.get(guild_id)
        if conversation is not None:
            conversation.rename(member_id, chosen)

    async def say(self, guild_id: int, author_id: int, author_name: str, text: str) -> None:
        """Typed input to the running tutor; refused (nothing sent, nothing stored) from outside the call."""
        conversation = self._running.get(guild_id)
        if conversation is None:
            raise NotRunning
        if not may_type(author_id, channel=conversation.voice_channel):
            raise NotInCall(conversation.voice_channel.mention)
        text = storable_text(text.strip())  # what is stored is exactly what the tutor is sent
        if not text or len(text) > SAY_LIMIT:
            raise TextTooLong(SAY_LIMIT)
        await conversation.say(author_id, author_name, text)

    async def stop_all(self, reason: str) -> None:
        """Shutdown: every running conversation ends as a stop would, and every start still connecting is
        called off (its row closed with `reason`)."""
        await asyncio.gather(*(c.stop(reason) for c in list(self._running.values())),
                             *(s.stop(reason) for s in list(self._starting.values())), return_exceptions=True)

    def _forget(self, conversation: Conversation) -> None:
        if self._running.get(conversation.guild_id) is conversation:
            del self._running[conversation.guild_id]

"""What goes into one conversation's transcript: each finished turn, named by who spoke or typed it.

Live's input transcription does not say who spoke, so a child turn is credited to the kids the mixer heard
since the previous child turn ended. Turns are handed to the `TurnWriter`, so the audio path never waits
for the database.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from bot.audio.mixer import Mixer
from bot.cost import TokenCounts
from bot.kid_names import name_for
from bot.live import events as ev
from bot.storage.models import TurnRow
from bot.storage.repository import Repository
from bot.tools import ToolRecord
from bot.turns import OnAlert, PendingEvent, PendingOutcome, PendingPromptFlag, PendingTurn, PendingUsage, TurnWriter

SPEAKER_MEMORY_S = 60  # mixer activity older than this before a turn's end is forgotten


class TurnLog:
    """Names each turn's speakers and queues it for storage; `stored`/`flagged` count what was written."""

    def __init__(self, repository: Repository, guild_id: int, session_id: int, mixer: Mixer, *,
                 started_mono: float, on_flagged: Callable[[TurnRow], Awaitable[None]], on_alert: OnAlert,
                 chosen_names: Mapping[int, str] | None = None) -> None:
        self._mixer = mixer
        self._writer = TurnWriter(repository, guild_id, session_id, on_flagged=on_flagged, on_alert=on_alert)
        self._wall_offset = time.time() - time.monotonic()
        self._last_child_turn_end = started_mono
        self.names: dict[int, str] = {}  # the kids heard so far, by member id: chosen name, else display name
        self._chosen: dict[int, str] = dict(chosen_names or {})

    @property
    def stored(self) -> int:
        return self._writer.stored

    @property
    def flagged(self) -> int:
        return self._writer.flagged

    def start(self) -> None:
        self._writer.start()

    async def close(self, drain_seconds: float) -> None:
        await self._writer.close(drain_seconds)

    def heard(self, user_id: int, display_name: str) -> None:
        """A kid's audio arrived (their name is kept for the transcript and `/tutor status`)."""
        if user_id not in self.names:  # once per kid, not per 20 ms frame
            self.names[user_id] = name_for(user_id, display_name, self._chosen)

    def rename(self, user_id: int, chosen: str | None) -> None:
        """A kid chose (or dropped) a name mid-call: later turns use it."""
        if chosen:
            self._chosen[user_id] = chosen
            if user_id in self.names:
                self.names[user_id] = chosen
        else:
            self._chosen.pop(user_id, None)

    def chosen_name(self, user_id: int) -> str | None:
        """The name this kid chose, if any: the only name the tutor is told (a display name may be a parent's)."""
        return self._chosen.get(user_id)

    def record(self, turn: ev.TurnTranscribed) -> None:
        """A turn Live transcribed: child turns are credited to whoever the mixer heard."""
        ids: tuple[int, ...] = ()
        speaker_name = None
        if turn.role == "child":
            ids = tuple(self._mixer.speakers_between(self._last_child_turn_end, turn.ended_at))
            self._last_child_turn_end = turn.ended_at
            self._mixer.forget_before(turn.ended_at - SPEAKER_MEMORY_S)
            speaker_name = ", ".join(self.names.get(i, str(i)) for i in ids) or None
        elif turn.role == "tutor":
            speaker_name = "Tutor"
        self._put(turn, ids, speaker_name)

    def typed(self, author_id: int, author_name: str, text: str) -> None:
        """A turn typed with `/tutor say`, stored with its author."""
        self.heard(author_id, author_name)
        now = time.monotonic()
        self._put(ev.TurnTranscribed("child", text, now, now), (author_id,), author_name, typed=True)

    def flag_prompt(self, reason: str) -> None:
        """The tutor's reply was blocked: the kid turns that prompted it are flagged too (after they are written)."""
        self._writer.put(PendingPromptFlag(reason))

    def usage(self, tokens: TokenCounts, total_tokens: int, cost_usd: float) -> None:
        """A usage snapshot; stored with the turn it came with."""
        self._writer.put(PendingUsage(tokens, total_tokens, cost_usd, self._wall(time.monotonic())))

    def tool_call(self, record: ToolRecord, alert: bool) -> None:
        """A tool call, stored with the child turn that prompted it; `alert` tells the moderators."""
        self._writer.put(PendingEvent("tool_call", record.name, self._wall(time.monotonic()), call_id=record.call_id,
                                      category=record.category, reason=record.reason, outcome=record.outcome,
                                      belongs_to="prompt", alert=alert))

    def tool_outcome(self, call_id: str, outcome: str) -> None:
        """What became of an earlier call (cancelled by the model)."""
        self._writer.put(PendingOutcome(call_id, outcome))

    def budget_stop(self, reason: str) -> None:
        """The daily budget ended the conversation; stored with the last turn."""
        self._writer.put(PendingEvent("budget_stop", "daily_budget", self._wall(time.monotonic()), reason=reason,
                                      outcome="goodbye, then the conversation ended", alert=False))

    def _put(self, turn: ev.TurnTranscribed, speaker_ids: tuple[int, ...], speaker_name: str | None, *,
             typed: bool = False) -> None:
        self._writer.put(PendingTurn(turn.role, turn.text, self._wall(turn.started_at),
                                     self._wall(max(turn.ended_at, turn.started_at)), speaker_ids, speaker_name,
                                     turn.interrupted, turn.flag_reason, typed))

    def _wall(self, mono: float) -> datetime:
        """A monotonic timestamp as UTC wall time, with one fixed offset so order is preserved."""
        return datetime.fromtimestamp(mono + self._wall_offset, UTC)

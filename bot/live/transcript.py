"""Turn transcript fragments into whole turns, the unit storage and moderators work with.

Gemini sends what the kids said (input transcription) and what the tutor says (output transcription)
in small pieces, interleaved with reply audio. `TranscriptAssembler` is pure and synchronous: feed it
events in arrival order and it returns the `TurnTranscribed` events that each one completed.

Rules: a child turn opens with the first input fragment and closes when the tutor starts answering
(first output fragment or reply audio) or at turn_complete. A child who talks over the tutor opens a
new child turn that outlives that turn_complete (it prompts the next reply). A tutor turn closes at
turn_complete; `Interrupted` marks it, a blocked turn_complete flags every turn it closes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.live.events import (
    AudioChunk,
    InputTranscript,
    Interrupted,
    LiveEvent,
    OutputTranscript,
    Role,
    TurnComplete,
    TurnTranscribed,
)


@dataclass(slots=True)
class _OpenTurn:
    role: Role
    started_at: float
    ended_at: float
    parts: list[str] = field(default_factory=list)
    interrupted: bool = False

    def text(self) -> str:
        return " ".join("".join(self.parts).split())

    def close(self, ended_at: float | None = None, flag_reason: str | None = None) -> TurnTranscribed:
        return TurnTranscribed(self.role, self.text(), self.started_at, ended_at or self.ended_at,
                               interrupted=self.interrupted, flag_reason=flag_reason)


class TranscriptAssembler:
    """Assembles child and tutor turns from fragments; `clock` stamps start and end times."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._child: _OpenTurn | None = None
        self._tutor: _OpenTurn | None = None

    def feed(self, event: LiveEvent) -> list[TurnTranscribed]:
        """Take one event; return the turns it completed (usually none)."""
        now = self._clock()
        done: list[TurnTranscribed] = []
        if isinstance(event, InputTranscript):
            self._on_child_fragment(event.text, now)
        elif isinstance(event, OutputTranscript | AudioChunk):
            done += self._on_tutor_output(event.text if isinstance(event, OutputTranscript) else "", now)
        elif isinstance(event, Interrupted):
            if self._tutor is not None:
                self._tutor.interrupted = True
        elif isinstance(event, TurnComplete):
            done += self._on_turn_complete(event, now)
        return done

    def flush(self) -> list[TurnTranscribed]:
        """Close whatever is open (the session is ending): the child first, then the tutor."""
        done = []
        child, tutor = self._child, self._tutor
        child_first = child is not None and (tutor is None or child.started_at <= tutor.started_at)
        order = (child, tutor) if child_first else (tutor, child)
        for turn in order:
            if turn is not None and turn.text():
                done.append(turn.close())
        self._child = self._tutor = None
        return done

    def cut_by_reconnect(self, *, input_replayed: bool) -> list[TurnTranscribed]:
        """The connection was replaced: a reply it was streaming ends here, interrupted.

        On a fresh (not resumed) connection the kids' unanswered audio is replayed and transcribed again, so
        the open child turn is dropped rather than stored twice.
        """
        done = []
        if self._tutor is not None:  # kept even without words yet: the kids heard part of a reply
            self._tutor.interrupted = True
            done.append(self._tutor.close())
            self._tutor = None
        if input_replayed:
            self._child = None
        return done

    def _on_child_fragment(self, text: str, now: float) -> None:
        if self._child is None:
            self._child = _OpenTurn("child", now, now)
        self._child.parts.append(text)
        self._child.ended_at = now

    def _on_tutor_output(self, text: str, now: float) -> list[TurnTranscribed]:
        done = []
        if self._tutor is None:
            self._tutor = _OpenTurn("tutor", now, now)
            if self._child is not None:  # the tutor answers: what the child said so far is one turn
                if self._child.text():
                    done.append(self._child.close())
                self._child = None
        self._tutor.parts.append(text)
        self._tutor.ended_at = now
        return done

    def _on_turn_complete(self, event: TurnComplete, now: float) -> list[TurnTranscribed]:
        flag = (event.reason or "blocked") if event.blocked else None
        done = []
        tutor, child = self._tutor, self._child
        # A child turn that began before this tutor turn prompted it and ends here; one that began
        # during the tutor's turn (talking over it) is the prompt for the next reply and stays open.
        if child is not None and (tutor is None or child.started_at <= tutor.started_at):
            if child.text():
                done.append(child.close(flag_reason=flag))
            self._child = None
        if tutor is not None:
            done.append(tutor.close(ended_at=now, flag_reason=flag))
        elif flag is not None:
            done.append(TurnTranscribed("tutor", "", now, now, flag_reason=flag))  # record the block itself
        self._tutor = None
        return done

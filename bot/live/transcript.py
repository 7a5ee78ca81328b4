"""Turn transcript fragments into whole turns, the unit storage and moderators work with.

Gemini sends what the kids said (input transcription) and what the tutor says (output transcription)
alongside the reply audio, and the input transcription is *not ordered* against the reply: on 3.x it
comes once, `finished`, before the tutor starts, bundled with the first audio, during the reply or even
after `turn_complete`; low-latency `InterimTranscript` guesses come while a kid is still speaking.
`TranscriptAssembler` is pure and synchronous: feed it events in arrival order and it returns the
`TurnTranscribed` events that each one completed.

Rules:
* A child turn opens with the first fragment (interim or final) and gathers the final text. When the tutor
  starts answering (first output transcript or audio), the open child turn becomes that reply's *prompt*.
* A final transcript with no open child turn, arriving while the tutor answers (with no one heard speaking
  since, i.e. no interim), or within `LATE_PROMPT_WINDOW_S` after an unprompted reply ended, is that
  reply's late prompt, stamped just before the reply so the transcript reads in order.
* At `turn_complete` the prompt and the tutor turn close together (prompt first); a blocked turn_complete
  flags both, and a prompt whose final text is still to come keeps the flag until it does. A child who
  talks over the tutor (heard after it started) opens a new turn that outlives that turn_complete.
* The tutor turn ends (`ended_at`) at `generation_complete` when there is one: turn_complete waits for
  the estimated playback. `Interrupted` marks it.
* No turn holds more than `MAX_TURN_CHARS` characters (a server can send an endless transcript).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.live.events import (
    AudioChunk,
    GenerationComplete,
    InputTranscript,
    InterimTranscript,
    Interrupted,
    LiveEvent,
    OutputTranscript,
    Role,
    TurnComplete,
    TurnTranscribed,
)

MAX_TURN_CHARS = 4000  # ~4 minutes of speech; a longer turn is cut here
LATE_PROMPT_WINDOW_S = 2.0  # a final transcript this soon after an unprompted reply is that reply's prompt
BEFORE_S = 1e-3  # a late prompt is stamped this much before the reply it prompted


@dataclass(slots=True)
class _OpenTurn:
    role: Role
    started_at: float
    ended_at: float
    parts: list[str] = field(default_factory=list)
    size: int = 0
    guess: str = ""  # the newest interim transcript: the text if no final one ever comes
    interrupted: bool = False
    generated_at: float | None = None
    heard_interim: bool = False  # (tutor) someone was heard speaking after this reply started
    flag: str | None = None
    closed_by_tutor: bool = False  # (prompt) its reply has completed; only the final text is awaited

    def add(self, text: str, now: float) -> None:
        if self.size < MAX_TURN_CHARS:
            piece = text[:MAX_TURN_CHARS - self.size]
            self.parts.append(piece)
            self.size += len(piece)
        self.ended_at = max(self.ended_at, now)

    def text(self) -> str:
        heard = " ".join("".join(self.parts).split()) or " ".join(self.guess.split())
        return heard[:MAX_TURN_CHARS]

    def close(self, ended_at: float | None = None, flag_reason: str | None = None) -> TurnTranscribed:
        return TurnTranscribed(self.role, self.text(), self.started_at, ended_at or self.ended_at,
                               interrupted=self.interrupted, flag_reason=flag_reason or self.flag)


@dataclass(slots=True)
class _EndedReply:
    started_at: float
    ended_at: float
    flag: str | None


class TranscriptAssembler:
    """Assembles child and tutor turns from fragments; `clock` stamps start and end times."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._child: _OpenTurn | None = None  # being heard, not yet answered
        self._prompt: _OpenTurn | None = None  # what the current (or last) reply answers
        self._tutor: _OpenTurn | None = None
        self._unprompted: _EndedReply | None = None  # the last reply, if it ended with no prompt

    def feed(self, event: LiveEvent) -> list[TurnTranscribed]:
        """Take one event; return the turns it completed (usually none)."""
        now = self._clock()
        done: list[TurnTranscribed] = []
        if isinstance(event, InputTranscript):
            done += self._on_child_text(event.text, now)
        elif isinstance(event, InterimTranscript):
            self._on_child_guess(event.text, now)
        elif isinstance(event, OutputTranscript | AudioChunk):
            done += self._on_tutor_output(event.text if isinstance(event, OutputTranscript) else "", now)
        elif isinstance(event, Interrupted):
            if self._tutor is not None:
                self._tutor.interrupted = True
        elif isinstance(event, GenerationComplete):
            if self._tutor is not None:
                self._tutor.generated_at = now
        elif isinstance(event, TurnComplete):
            done += self._on_turn_complete(event, now)
        return done

    def flush(self) -> list[TurnTranscribed]:
        """Close whatever is open (the session is ending), in the order the turns started."""
        turns = [t for t in (self._prompt, self._child, self._tutor) if t is not None and t.text()]
        self._prompt = self._child = self._tutor = None
        self._unprompted = None
        return [t.close() for t in sorted(turns, key=lambda t: t.started_at)]

    def cut_by_reconnect(self, *, replayed_since: float | None) -> list[TurnTranscribed]:
        """The connection was replaced: a reply it was streaming ends here, interrupted.

        Input sent since `replayed_since` (None: nothing) goes to the new connection again and is transcribed
        again, so child turns heard since then are dropped rather than stored twice.
        """
        done = []
        for name in ("_prompt", "_child"):
            turn: _OpenTurn | None = getattr(self, name)
            if turn is not None and replayed_since is not None and turn.started_at >= replayed_since:
                setattr(self, name, None)
        if self._prompt is not None and self._tutor is not None:
            if self._prompt.text():
                done.append(self._prompt.close())
            self._prompt = None
        if self._tutor is not None:  # kept even without words yet: the kids heard part of a reply
            self._tutor.interrupted = True
            done.append(self._tutor.close(ended_at=self._tutor.generated_at))
            self._tutor = None
        self._unprompted = None
        return done

    # child ------------------------------------------------------------------------------------
    def _on_child_guess(self, text: str, now: float) -> None:
        if self._child is None:
            self._child = _OpenTurn("child", now, now)
        self._child.guess = text
        self._child.ended_at = now
        if self._tutor is not None:
            self._tutor.heard_interim = True
        self._unprompted = None

    def _on_child_text(self, text: str, now: float) -> list[TurnTranscribed]:
        prompt, tutor, ended = self._prompt, self._tutor, self._unprompted
        if prompt is not None and not prompt.parts:  # the oldest utterance still waiting for its words
            prompt.add(text, prompt.ended_at)
            if prompt.closed_by_tutor:
                self._prompt = None
                return [prompt.close()]
            return []
        if self._child is not None:
            self._child.add(text, now)
            return []
        if tutor is not None and not tutor.interrupted and not tutor.heard_interim:
            if prompt is None:
                self._prompt = prompt = _OpenTurn("child", tutor.started_at - BEFORE_S, tutor.started_at - BEFORE_S)
            prompt.add(text, prompt.ended_at)
            return []
        if tutor is None and ended is not None and now - ended.ended_at <= LATE_PROMPT_WINDOW_S:
            self._unprompted = None
            late = _OpenTurn("child", ended.started_at - BEFORE_S, ended.started_at - BEFORE_S, flag=ended.flag)
            late.add(text, late.ended_at)
            return [late.close()]
        self._child = _OpenTurn("child", now, now)
        self._child.add(text, now)
        return []

    # tutor ------------------------------------------------------------------------------------
    def _on_tutor_output(self, text: str, now: float) -> list[TurnTranscribed]:
        done = []
        if self._tutor is None:
            if self._prompt is not None:  # the previous reply's prompt never got its words: keep the guess
                if self._prompt.text():
                    done.append(self._prompt.close())
                self._prompt = None
            self._tutor = _OpenTurn("tutor", now, now)
            self._prompt, self._child = self._child, None  # the tutor answers what the kids said so far
            self._unprompted = None
        self._tutor.add(text, now)
        return done

    def _on_turn_complete(self, event: TurnComplete, now: float) -> list[TurnTranscribed]:
        flag = (event.reason or "blocked") if event.blocked else None
        done = []
        tutor = self._tutor
        if tutor is None and self._child is not None and self._prompt is None:  # answered with no audio
            self._prompt, self._child = self._child, None
        prompt = self._prompt
        if prompt is not None:
            prompt.flag = flag
            if prompt.parts or not prompt.guess:
                if prompt.text():
                    done.append(prompt.close())
                self._prompt = None
            else:  # only a guess so far: its final words may still come, and they carry this flag
                prompt.closed_by_tutor = True
        ended_at = (tutor.generated_at or now) if tutor is not None else now
        if tutor is not None:
            done.append(tutor.close(ended_at=ended_at, flag_reason=flag))
        elif flag is not None:
            done.append(TurnTranscribed("tutor", "", now, now, flag_reason=flag))  # record the block itself
        self._unprompted = _EndedReply(tutor.started_at if tutor else now, now, flag) if prompt is None else None
        self._tutor = None
        return done

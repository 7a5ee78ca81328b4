"""Typed events a `LiveSession` emits; the rest of the bot consumes only these.

Frozen dataclasses, one per thing that happened, so a misspelt event is an import error rather than
a message nobody receives. Audio never travels without its format (`sample_rate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["child", "tutor"]


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Reply audio from the tutor: s16le mono PCM at `sample_rate` (24 kHz from Gemini)."""

    pcm: bytes
    sample_rate: int = 24_000
    received_at: float = 0.0  # time.monotonic() when the server message arrived


@dataclass(frozen=True, slots=True)
class InputTranscript:
    """What the kids said, as Gemini heard it: 3.x sends it once, `finished`; older models in pieces.

    It is not ordered against the reply: it may come before the tutor starts, during the reply or after it.
    """

    text: str
    finished: bool = False


@dataclass(frozen=True, slots=True)
class InterimTranscript:
    """A low-latency guess at what a kid is saying right now (replaced, not extended, by the next one)."""

    text: str


@dataclass(frozen=True, slots=True)
class OutputTranscript:
    """A fragment of what the tutor is saying."""

    text: str


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A kid spoke over the tutor: drop all queued reply audio now."""


@dataclass(frozen=True, slots=True)
class GenerationComplete:
    """The tutor has said everything for this reply (the end of a reply: all its audio has arrived).

    `TurnComplete` follows seconds later, once the server reckons the audio has played out; an
    interrupted reply has no `GenerationComplete`.
    """


@dataclass(frozen=True, slots=True)
class TurnComplete:
    """The tutor finished (or abandoned) its turn; `blocked` when a safety filter stopped it."""

    reason: str | None = None
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class TurnTranscribed:
    """A whole turn assembled from transcript fragments, ready to store."""

    role: Role
    text: str
    started_at: float  # time.monotonic()
    ended_at: float
    interrupted: bool = False
    flag_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """One turn's token accounting (the bill is the sum of these); the prompt re-counts the whole context.

    `prompt_by_modality` / `response_by_modality` map "TEXT", "AUDIO", … to token counts.
    """

    total_tokens: int
    prompt_tokens: int | None = None
    response_tokens: int | None = None
    thoughts_tokens: int | None = None
    prompt_by_modality: dict[str, int] = field(default_factory=dict)
    response_by_modality: dict[str, int] = field(default_factory=dict)
    tool_use_prompt_tokens: int | None = None  # what tool results added to the prompt, counted apart from it


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """One function the model wants called: answer it with `LiveSession.send_tool_response(id, …)`."""

    id: str
    name: str
    args: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for function calls (NON_BLOCKING by default on 3.8: it may keep talking meanwhile)."""

    calls: tuple[FunctionCall, ...]


@dataclass(frozen=True, slots=True)
class ToolCallCancelled:
    """Calls the model no longer wants answered (a kid spoke meanwhile): drop their results."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """The connection is being replaced (GoAway or a drop); input audio is queued meanwhile."""

    reason: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Reconnected:
    """A new connection is up; `resumed` when the server resumed the old session by handle."""

    resumed: bool
    attempt: int
    replayed_ms: float = 0.0  # queued input audio re-sent after connecting


@dataclass(frozen=True, slots=True)
class Failed:
    """The session is over and will not reconnect; `reason` is a plain-English sentence."""

    reason: str
    permanent: bool = True
    code: int | None = field(default=None)


LiveEvent = (
    AudioChunk | InputTranscript | InterimTranscript | OutputTranscript | Interrupted | GenerationComplete
    | TurnComplete | TurnTranscribed | Usage | ToolCall | ToolCallCancelled | Reconnecting | Reconnected | Failed
)

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
    """A fragment of what the kids said, as Gemini heard it (arrives in pieces)."""

    text: str


@dataclass(frozen=True, slots=True)
class OutputTranscript:
    """A fragment of what the tutor is saying."""

    text: str


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A kid spoke over the tutor: drop all queued reply audio now."""


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
    """Token accounting reported by the server."""

    total_tokens: int
    prompt_tokens: int | None = None
    response_tokens: int | None = None


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
    AudioChunk | InputTranscript | OutputTranscript | Interrupted | TurnComplete | TurnTranscribed
    | Usage | Reconnecting | Reconnected | Failed
)

"""What `LiveSession` sends, and the two buffers that keep it from being lost across a reconnect.

`AudioBoundedQueue` is the outbox: input waiting to be sent, kept while disconnected, with its audio
capped so a long outage drops the *oldest* speech (and counts it) instead of growing without bound.
`ReplayRing` holds what was sent but not yet confirmed by a `session_resumption_update`; after a
reconnect its messages go back in front of the outbox. Both are pure and synchronous: the session
owns the timing, these only keep order and byte counts. `cap_seed` bounds what a fresh connection is
seeded with (a server or a store can hold huge turns).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from google.genai import types

from bot.audio.formats import LIVE_INPUT_MIME

MAX_SEED_TURNS = 60
MAX_SEED_CHARS = 20_000  # what a fresh connection is seeded with, newest turns first (~5k tokens)
MAX_SEED_TURN_CHARS = 2_000  # one seeded turn is cut here


@dataclass(frozen=True, slots=True)
class HistoryTurn:
    """An earlier turn to seed a new conversation with."""

    role: Literal["child", "tutor"]
    text: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One client message: 16 kHz input audio, the end of the kids' speech, typed text, history, or tool results."""

    kind: Literal["audio", "audio_end", "text", "history", "tool_response", "interrupt"]
    audio: bytes = b""
    text: str = ""
    turns: tuple[HistoryTurn, ...] = ()
    responses: tuple[types.FunctionResponse, ...] = ()


@dataclass(slots=True)
class SentMessage:
    """An `Outgoing` as sent: on which connection, its client message index there, and when."""

    connection: int
    index: int
    sent_at: float
    message: Outgoing


class AudioBoundedQueue:
    """A FIFO of outgoing messages whose audio is capped; the oldest audio goes first when full."""

    def __init__(self, max_audio_bytes: int) -> None:
        self._items: deque[Outgoing] = deque()
        self._max = max_audio_bytes
        self.audio_bytes = 0
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, message: Outgoing) -> None:
        """Append at the back (new input)."""
        self._items.append(message)
        self.audio_bytes += len(message.audio)
        self._trim()

    def prepend(self, messages: Sequence[Outgoing]) -> None:
        """Put `messages` in front, in their order (replay after a reconnect goes before new input)."""
        self._items.extendleft(reversed(messages))
        self.audio_bytes += sum(len(m.audio) for m in messages)
        self._trim()

    def pop(self) -> Outgoing | None:
        """The oldest message, or None when empty."""
        if not self._items:
            return None
        message = self._items.popleft()
        self.audio_bytes -= len(message.audio)
        return message

    def pop_coalesced(self, max_audio_bytes: int) -> Outgoing | None:
        """The oldest message; if it is audio, joined with the audio right behind it (up to `max_audio_bytes`).

        One realtime_input message per 20 ms frame is the send path's main cost (SDK validation, JSON,
        websocket framing); when frames have piled up, sending them as one message costs no latency.
        """
        first = self.pop()
        if first is None or first.kind != "audio":
            return first
        chunks, size = [first.audio], len(first.audio)
        while self._items and self._items[0].kind == "audio" and size + len(self._items[0].audio) <= max_audio_bytes:
            chunk = self.pop().audio  # type: ignore[union-attr]
            chunks.append(chunk)
            size += len(chunk)
        return first if len(chunks) == 1 else Outgoing("audio", audio=b"".join(chunks))

    def _trim(self) -> None:
        # Only audio is dropped: a text or audio_end is tiny and losing it would change the conversation.
        while self.audio_bytes > self._max:
            oldest = next(i for i, m in enumerate(self._items) if m.audio)
            dropped = self._items[oldest]
            del self._items[oldest]
            self.audio_bytes -= len(dropped.audio)
            self.dropped_bytes += len(dropped.audio)


class ReplayRing:
    """Messages sent but not yet confirmed by a resumption update, oldest first (audio capped)."""

    def __init__(self, max_audio_bytes: int) -> None:
        self._items: deque[SentMessage] = deque()
        self._max = max_audio_bytes
        self._audio_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, sent: SentMessage) -> None:
        """Remember a message just sent; past the cap the oldest are forgotten."""
        self._items.append(sent)
        self._audio_bytes += len(sent.message.audio)
        while self._audio_bytes > self._max and self._items:
            self._audio_bytes -= len(self._items.popleft().message.audio)

    def confirm(self, connection: int, *, through_index: int | None = None, sent_before: float | None = None) -> None:
        """Forget what the server has consumed on `connection` (by index, or by time without one)."""
        while self._items and self._items[0].connection <= connection and (
            self._items[0].connection < connection
            or (through_index is not None and self._items[0].index <= through_index)
            or (sent_before is not None and self._items[0].sent_at < sent_before)
        ):
            self._audio_bytes -= len(self._items.popleft().message.audio)

    def take(self, sent_after: float = 0.0) -> list[Outgoing]:
        """Empty the ring, returning the messages (sent after `sent_after`) to replay in order."""
        return [s.message for s in self.take_sent(sent_after)]

    def take_sent(self, sent_after: float = 0.0) -> list[SentMessage]:
        """`take`, keeping when and where each message was sent."""
        kept = [s for s in self._items if s.sent_at >= sent_after]
        self._items.clear()
        self._audio_bytes = 0
        return kept


def history_contents(turns: Sequence[HistoryTurn]) -> list[types.Content]:
    """Turns as Live client content: the kids are the `user`, the tutor the `model`."""
    return [types.Content(role="user" if t.role == "child" else "model", parts=[types.Part(text=t.text)])
            for t in turns]


async def send_outgoing(session: object, message: Outgoing) -> None:
    """Put one message on the wire of a genai `AsyncSession`."""
    if message.kind == "audio":
        await session.send_realtime_input(audio=types.Blob(data=message.audio, mime_type=LIVE_INPUT_MIME))
    elif message.kind == "audio_end":
        await session.send_realtime_input(audio_stream_end=True)
    elif message.kind == "text":
        await session.send_realtime_input(text=message.text)
    elif message.kind == "tool_response":
        await session.send_tool_response(function_responses=list(message.responses))
    elif message.kind == "interrupt":  # turn_complete=True unconditionally interrupts generation on 3.8
        await session.send_client_content(turns=[types.Content(role="user", parts=[types.Part(text=message.text)])],
                                          turn_complete=True)
    else:  # history added after start: context only, no reply wanted
        await session.send_client_content(turns=history_contents(message.turns), turn_complete=False)


def cap_seed(turns: Sequence[HistoryTurn], *, max_turns: int = MAX_SEED_TURNS, max_chars: int = MAX_SEED_CHARS,
             max_turn_chars: int = MAX_SEED_TURN_CHARS) -> list[HistoryTurn]:
    """The newest turns that fit the caps, oldest first; a long turn is cut (a server or a store can hold huge ones)."""
    kept: list[HistoryTurn] = []
    total = 0
    for turn in reversed(turns):
        text = turn.text[:max_turn_chars]
        if len(kept) >= max_turns or total + len(text) > max_chars:
            break
        kept.append(turn if text == turn.text else HistoryTurn(turn.role, text))
        total += len(text)
    return kept[::-1]

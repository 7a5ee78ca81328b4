"""What one Gemini Live server message means: the events it carries and the control signals in it.

A message may carry audio, both transcripts, `interrupted`, `turn_complete`, usage, a resumption
update and a GoAway all at once (3.x bundles parts), so every field is read, in a fixed order:
input transcript, reply audio, output transcript, interrupted, turn_complete, usage. Pure and
synchronous; `LiveSession` publishes the events and acts on the signals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from google.genai import types

from bot.live.events import AudioChunk, InputTranscript, Interrupted, LiveEvent, OutputTranscript, TurnComplete, Usage

BENIGN_TURN_REASONS = frozenset({"TURN_COMPLETE_REASON_UNSPECIFIED", "NEED_MORE_INPUT", "MALFORMED_FUNCTION_CALL"})
DEFAULT_OUTPUT_RATE = 24_000


@dataclass(slots=True)
class ServerReading:
    """One server message read: its events in order, and the resumption update / GoAway it carried."""

    events: list[LiveEvent] = field(default_factory=list)
    resumption: types.LiveServerSessionResumptionUpdate | None = None
    go_away: types.LiveServerGoAway | None = None


def read_server_message(message: types.LiveServerMessage, now: float) -> ServerReading:
    """Every field of `message` as events (stamped `now`) and signals."""
    reading = ServerReading(resumption=message.session_resumption_update, go_away=message.go_away)
    events = reading.events
    content = message.server_content
    if content is not None:
        if content.input_transcription is not None and content.input_transcription.text:
            events.append(InputTranscript(content.input_transcription.text))
        if content.model_turn is not None:
            for part in content.model_turn.parts or ():
                if part.inline_data is not None and part.inline_data.data:
                    blob = part.inline_data
                    events.append(AudioChunk(blob.data or b"", rate_from_mime(blob.mime_type), received_at=now))
        if content.output_transcription is not None and content.output_transcription.text:
            events.append(OutputTranscript(content.output_transcription.text))
        if content.interrupted:
            events.append(Interrupted())
        if content.turn_complete:
            events.append(turn_complete_event(content.turn_complete_reason))
    if message.usage_metadata is not None:
        usage = message.usage_metadata
        events.append(Usage(usage.total_token_count or 0, usage.prompt_token_count, usage.response_token_count))
    return reading


def turn_complete_event(reason: object) -> TurnComplete:
    """`TurnComplete` with the reason's name; `blocked` unless the reason is one of the benign ones."""
    name = getattr(reason, "value", None) or (str(reason) if reason is not None else None)
    return TurnComplete(name, blocked=name is not None and name not in BENIGN_TURN_REASONS)


def rate_from_mime(mime: str | None) -> int:
    """The sample rate in `audio/pcm;rate=N`, or 24 kHz (what Live sends) when it is not stated."""
    match = re.search(r"rate=(\d+)", mime or "")
    return int(match.group(1)) if match else DEFAULT_OUTPUT_RATE

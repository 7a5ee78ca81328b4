"""What one Gemini Live server message means: the events it carries and the control signals in it.

A message may carry audio, both transcripts, `interrupted`, `generation_complete`, `turn_complete`, usage,
a tool call, a resumption update and a GoAway all at once (3.x bundles parts), so every field is read,
in a fixed order: input transcript (final, then interim), reply audio, output transcript, interrupted,
generation_complete, turn_complete, tool calls, usage. `LiveSession` publishes the events and acts on the
signals.

Reply audio leaves here as whole 16-bit samples at 24 kHz, whatever the server sent: a rate stated in
the mime type (`audio/pcm;rate=16000`) is converted (one soxr stream per reply, flushed at its end), and a
chunk split inside a sample carries its odd byte over to the next chunk.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np
import soxr
from google.genai import types

from bot.audio.formats import LIVE_OUTPUT
from bot.live.events import (
    AudioChunk,
    FunctionCall,
    GenerationComplete,
    InputTranscript,
    InterimTranscript,
    Interrupted,
    LiveEvent,
    OutputTranscript,
    ToolCall,
    ToolCallCancelled,
    TurnComplete,
    Usage,
)

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_RATE = LIVE_OUTPUT.sample_rate
# The only block signal Live has (no finish_reason, no safety ratings): these documented prohibitions.
# RESPONSE_REJECTED (proactive audio chose not to answer), NEED_MORE_INPUT, MALFORMED_FUNCTION_CALL,
# MAX_REGENERATION_REACHED and reasons this SDK does not know are normal ends, not safety blocks.
SAFETY_TURN_REASONS = frozenset({
    "PROHIBITED_INPUT_CONTENT", "IMAGE_PROHIBITED_INPUT_CONTENT", "INPUT_TEXT_CONTAIN_PROMINENT_PERSON_PROHIBITED",
    "INPUT_IMAGE_CELEBRITY", "INPUT_IMAGE_PHOTO_REALISTIC_CHILD_PROHIBITED", "INPUT_TEXT_NCII_PROHIBITED",
    "INPUT_OTHER", "INPUT_IP_PROHIBITED", "BLOCKLIST", "UNSAFE_PROMPT_FOR_IMAGE_GENERATION",
    "GENERATED_IMAGE_SAFETY", "GENERATED_CONTENT_SAFETY", "GENERATED_AUDIO_SAFETY", "GENERATED_VIDEO_SAFETY",
    "GENERATED_CONTENT_PROHIBITED", "GENERATED_CONTENT_BLOCKLIST", "GENERATED_IMAGE_PROHIBITED",
    "GENERATED_IMAGE_CELEBRITY", "GENERATED_IMAGE_PROMINENT_PEOPLE_DETECTED_BY_REWRITER",
    "GENERATED_IMAGE_IDENTIFIABLE_PEOPLE", "GENERATED_IMAGE_MINORS", "OUTPUT_IMAGE_IP_PROHIBITED", "GENERATED_OTHER",
})


@dataclass(slots=True)
class ServerReading:
    """One server message read: its events in order, and the resumption update / GoAway it carried."""

    events: list[LiveEvent] = field(default_factory=list)
    resumption: types.LiveServerSessionResumptionUpdate | None = None
    go_away: types.LiveServerGoAway | None = None


class ReplyAudio:
    """Reply audio as whole 24 kHz samples: carries a split sample over, converts a stated other rate."""

    def __init__(self) -> None:
        self._odd = b""
        self._rate: int | None = None
        self._stream: soxr.ResampleStream | None = None

    def feed(self, pcm: bytes, rate: int) -> bytes:
        """The next chunk's usable 24 kHz bytes (possibly none yet)."""
        data = self._odd + pcm
        usable = len(data) - len(data) % 2
        self._odd = data[usable:]
        samples = np.frombuffer(data[:usable], dtype="<i2")
        if rate == DEFAULT_OUTPUT_RATE and self._stream is None:
            return samples.tobytes()
        if self._stream is None or rate != self._rate:
            tail = self._drain()
            self._rate = rate
            self._stream = soxr.ResampleStream(rate, DEFAULT_OUTPUT_RATE, 1, dtype="int16", quality="HQ")
            return tail + self._stream.resample_chunk(samples).astype("<i2").tobytes()
        return self._stream.resample_chunk(samples).astype("<i2").tobytes()

    def end(self) -> bytes:
        """The reply is over: what the converter still holds (a lone odd byte cannot be played)."""
        self._odd = b""
        tail = self._drain()
        self._stream, self._rate = None, None
        return tail

    def drop(self) -> None:
        """Barge-in: forget what is held."""
        self._odd = b""
        self._stream, self._rate = None, None

    def _drain(self) -> bytes:
        if self._stream is None:
            return b""
        return self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True).astype("<i2").tobytes()


class ServerMessageReader:
    """Reads the messages of one session in order (it holds the reply audio's state between them)."""

    def __init__(self) -> None:
        self.audio = ReplyAudio()

    def read(self, message: types.LiveServerMessage, now: float) -> ServerReading:
        """Every field of `message` as events (stamped `now`) and signals."""
        reading = ServerReading(resumption=message.session_resumption_update, go_away=message.go_away)
        events = reading.events
        content = message.server_content
        if content is not None:
            self._read_content(content, now, events)
        if message.tool_call is not None and message.tool_call.function_calls:
            events.append(ToolCall(tuple(FunctionCall(c.id or "", c.name or "", dict(c.args or {}))
                                         for c in message.tool_call.function_calls)))
        if message.tool_call_cancellation is not None and message.tool_call_cancellation.ids:
            events.append(ToolCallCancelled(tuple(message.tool_call_cancellation.ids)))
        if message.usage_metadata is not None:
            events.append(usage_event(message.usage_metadata))
        return reading

    def _read_content(self, content: types.LiveServerContent, now: float, events: list[LiveEvent]) -> None:
        if content.input_transcription is not None and content.input_transcription.text:
            events.append(InputTranscript(content.input_transcription.text,
                                          finished=bool(content.input_transcription.finished)))
        if content.interim_input_transcription is not None and content.interim_input_transcription.text:
            events.append(InterimTranscript(content.interim_input_transcription.text))
        if content.model_turn is not None:
            for part in content.model_turn.parts or ():
                if part.inline_data is not None and part.inline_data.data:
                    self._audio(part.inline_data, now, events)
        if content.output_transcription is not None and content.output_transcription.text:
            events.append(OutputTranscript(content.output_transcription.text))
        if content.interrupted:
            self.audio.drop()
            events.append(Interrupted())
        if content.generation_complete:
            self._end_audio(now, events)
            events.append(GenerationComplete())
        if content.turn_complete:
            self._end_audio(now, events)
            events.append(turn_complete_event(content.turn_complete_reason))

    def _audio(self, blob: types.Blob, now: float, events: list[LiveEvent]) -> None:
        pcm = self.audio.feed(blob.data or b"", rate_from_mime(blob.mime_type))
        if pcm:
            events.append(AudioChunk(pcm, DEFAULT_OUTPUT_RATE, received_at=now))

    def _end_audio(self, now: float, events: list[LiveEvent]) -> None:
        if tail := self.audio.end():
            events.append(AudioChunk(tail, DEFAULT_OUTPUT_RATE, received_at=now))


def turn_complete_event(reason: object) -> TurnComplete:
    """`TurnComplete` with the reason's name; `blocked` only for a documented safety reason."""
    name = getattr(reason, "value", None) or (str(reason) if reason is not None else None)
    blocked = name in SAFETY_TURN_REASONS
    if name is not None and not blocked and name != "TURN_COMPLETE_REASON_UNSPECIFIED":
        log.info("live.turn_reason", extra={"reason": name})
    return TurnComplete(name, blocked=blocked)


def usage_event(usage: types.UsageMetadata) -> Usage:
    """Per-turn usage with its modality details (tokens per TEXT / AUDIO / …)."""
    return Usage(usage.total_token_count or 0, usage.prompt_token_count, usage.response_token_count,
                 usage.thoughts_token_count, _by_modality(usage.prompt_tokens_details),
                 _by_modality(usage.response_tokens_details), usage.tool_use_prompt_token_count)


def _by_modality(details: list[types.ModalityTokenCount] | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for detail in details or ():
        name = getattr(detail.modality, "value", None) or str(detail.modality)
        counts[name] = counts.get(name, 0) + (detail.token_count or 0)
    return counts


def rate_from_mime(mime: str | None) -> int:
    """The sample rate in `audio/pcm;rate=N`, or 24 kHz (what Live sends) when it is not stated."""
    match = re.search(r"rate=(\d+)", mime or "")
    rate = int(match.group(1)) if match else DEFAULT_OUTPUT_RATE
    return rate if 4_000 <= rate <= 192_000 else DEFAULT_OUTPUT_RATE

"""Reading one server message (`bot.live.inbound`): every field, in a fixed order, as typed events."""

from __future__ import annotations

import base64

from google.genai import types

from bot.live.events import (
    AudioChunk,
    FunctionCall,
    InputTranscript,
    Interrupted,
    OutputTranscript,
    ToolCall,
    ToolCallCancelled,
    TurnComplete,
    Usage,
)
from bot.live.inbound import ServerMessageReader, rate_from_mime, turn_complete_event


def message(obj: dict) -> types.LiveServerMessage:
    """A server frame parsed the way the SDK parses it (camelCase keys, base64 data)."""
    return types.LiveServerMessage.model_validate(obj)


def test_a_bundled_message_becomes_every_event_in_order():
    """Input transcript, audio, output transcript, interrupted, turn_complete, usage — plus the signals."""
    pcm = b"\x01\x00" * 10
    reading = ServerMessageReader().read(message({
        "serverContent": {"inputTranscription": {"text": "hi"}, "outputTranscription": {"text": "Hello"},
                          "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000",
                                                                  "data": base64.b64encode(pcm).decode()}}]},
                          "interrupted": True, "turnComplete": True},
        "usageMetadata": {"totalTokenCount": 7},
        "sessionResumptionUpdate": {"newHandle": "h", "resumable": True}, "goAway": {"timeLeft": "5s"}}), now=1.5)
    assert [type(e) for e in reading.events] == [InputTranscript, AudioChunk, OutputTranscript, Interrupted,
                                                  TurnComplete, Usage]
    assert reading.events[1] == AudioChunk(pcm, 24_000, received_at=1.5)
    assert reading.resumption.new_handle == "h" and reading.go_away.time_left == "5s"


def test_only_documented_block_reasons_block():
    """Benign reasons, RESPONSE_REJECTED and no reason are not blocks; a safety reason is."""
    assert not turn_complete_event(None).blocked
    assert not turn_complete_event(types.TurnCompleteReason.NEED_MORE_INPUT).blocked
    assert not turn_complete_event(types.TurnCompleteReason.RESPONSE_REJECTED).blocked
    assert not turn_complete_event(types.TurnCompleteReason.MAX_REGENERATION_REACHED).blocked
    assert turn_complete_event(types.TurnCompleteReason.GENERATED_CONTENT_SAFETY).blocked
    assert turn_complete_event(types.TurnCompleteReason.PROHIBITED_INPUT_CONTENT).blocked


def test_rate_is_read_from_the_mime_type():
    """`audio/pcm;rate=N` gives N; no rate means Live's 24 kHz."""
    assert rate_from_mime("audio/pcm;rate=16000") == 16_000
    assert rate_from_mime("audio/pcm") == 24_000 and rate_from_mime(None) == 24_000


def test_tool_calls_and_cancellations_become_events():
    """A toolCall lists its function calls (id, name, args); a cancellation lists ids."""
    reader = ServerMessageReader()
    call = reader.read(message({"toolCall": {"functionCalls": [{"id": "c1", "name": "f", "args": {"x": 1}}]}}), 0)
    cancel = reader.read(message({"toolCallCancellation": {"ids": ["c1"]}}), 0)
    assert call.events == [ToolCall((FunctionCall("c1", "f", {"x": 1}),))]
    assert cancel.events == [ToolCallCancelled(("c1",))]


def test_usage_keeps_thoughts_and_modality_details():
    """usageMetadata → Usage with thoughts tokens and tokens per modality."""
    (usage,) = ServerMessageReader().read(message({"usageMetadata": {
        "promptTokenCount": 30, "responseTokenCount": 20, "thoughtsTokenCount": 136, "totalTokenCount": 186,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}, {"modality": "AUDIO", "tokenCount": 20}],
        "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 20}]}}), 0).events
    assert usage == Usage(186, 30, 20, 136, {"TEXT": 10, "AUDIO": 20}, {"AUDIO": 20})


def test_tool_use_prompt_tokens_reach_the_bill():
    """toolUsePromptTokenCount (what the tool results added to the prompt, counted apart from promptTokenCount)
    is carried through and billed as input text, so the meter does not under-report a turn with tool calls."""
    from bot.cost import Prices, TokenCounts
    from bot.cost_meter import CostMeter

    (usage,) = ServerMessageReader().read(message({"usageMetadata": {
        "promptTokenCount": 30, "responseTokenCount": 20, "toolUsePromptTokenCount": 40, "totalTokenCount": 90,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}, {"modality": "AUDIO", "tokenCount": 20}],
        "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 20}]}}), 0).events
    assert usage.tool_use_prompt_tokens == 40
    tokens, total, _ = CostMeter(Prices()).add(usage)
    assert tokens == TokenCounts(text_in=50, audio_in=20, audio_out=20) and total == 90

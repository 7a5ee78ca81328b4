"""Reading one server message (`bot.live.inbound`): every field, in a fixed order, as typed events."""

from __future__ import annotations

import base64

from google.genai import types

from bot.live.events import AudioChunk, InputTranscript, Interrupted, OutputTranscript, TurnComplete, Usage
from bot.live.inbound import rate_from_mime, read_server_message, turn_complete_event


def message(obj: dict) -> types.LiveServerMessage:
    """A server frame parsed the way the SDK parses it (camelCase keys, base64 data)."""
    return types.LiveServerMessage.model_validate(obj)


def test_a_bundled_message_becomes_every_event_in_order():
    """Input transcript, audio, output transcript, interrupted, turn_complete, usage — plus the signals."""
    pcm = b"\x01\x00" * 10
    reading = read_server_message(message({
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
    """Benign reasons and no reason are not blocks; a safety reason is."""
    assert not turn_complete_event(None).blocked
    assert not turn_complete_event(types.TurnCompleteReason.NEED_MORE_INPUT).blocked
    assert turn_complete_event(types.TurnCompleteReason.GENERATED_CONTENT_SAFETY).blocked


def test_rate_is_read_from_the_mime_type():
    """`audio/pcm;rate=N` gives N; no rate means Live's 24 kHz."""
    assert rate_from_mime("audio/pcm;rate=16000") == 16_000
    assert rate_from_mime("audio/pcm") == 24_000 and rate_from_mime(None) == 24_000

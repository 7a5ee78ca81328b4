"""What the fake Live "model" decides, apart from the socket: setup rules, voice activity, usage, replies.

Kept out of `tests/fake_live.py` (the protocol and the websocket) so each rule can be read, and tested, on
its own. Facts are from /work/shared/gemini_live_38.md and /work/shared/gemini_live_wire.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INPUT_RATE = 16_000
OUTPUT_RATE = 24_000
AUDIO_TOKENS_PER_S = 25  # gemini_live_38.md §D: $0.018/min at $12/1M tokens
CHARS_PER_TEXT_TOKEN = 4
VOICED_RMS = 300.0  # about -41 dBFS: speech, not the silence tail the bot sends
CLOSE_REASON_LIMIT = 123  # bytes a websocket close reason can carry


def get(obj: dict, *names: str) -> Any:
    """First present key among spellings (the SDK mixes camelCase and snake_case)."""
    for name in names:
        if name in obj:
            return obj[name]
    return None


# ----- setup fields gemini-3.8-live rejects ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SetupRule:
    """A setup field 3.8 refuses: how to spot it on the wire and the close reason (code 1007) it earns."""

    field: str
    present: Callable[[dict], bool]
    reason: str


def _generation(setup: dict) -> dict:
    return get(setup, "generationConfig", "generation_config") or {}


def _tools(setup: dict) -> list[dict]:
    return list(get(setup, "tools") or [])


SETUP_RULES: tuple[SetupRule, ...] = (
    SetupRule("thinking_config", lambda s: get(_generation(s), "thinkingConfig", "thinking_config") is not None,
              "thinking_config is not supported for this model."),
    SetupRule("enable_affective_dialog",
              lambda s: get(_generation(s), "enableAffectiveDialog", "enable_affective_dialog") is not None,
              'Invalid JSON payload received. Unknown name "enableAffectiveDialog" at \'setup.generation_config\': '
              "Cannot find field."),
    SetupRule("proactivity.proactive_audio=false",
              lambda s: get(get(s, "proactivity") or {}, "proactiveAudio", "proactive_audio") is False,
              "proactive_audio cannot be disabled for this model."),
    SetupRule("response_modalities=TEXT",
              lambda s: "TEXT" in (get(_generation(s), "responseModalities", "response_modalities") or []),
              "The requested combination of response modalities (TEXT) is not supported by the model."),
    SetupRule("tools.code_execution", lambda s: any(get(t, "codeExecution", "code_execution") is not None
                                                    for t in _tools(s)),
              "Code execution is not supported for this model."),
    SetupRule("tools.google_maps", lambda s: any(get(t, "googleMaps", "google_maps") is not None for t in _tools(s)),
              "Google Maps grounding is not supported for this model."),
    SetupRule("tools.url_context", lambda s: any(get(t, "urlContext", "url_context") is not None for t in _tools(s)),
              "URL context is not supported for this model."),
)


def _speech(setup: dict) -> dict:
    return get(_generation(setup), "speechConfig", "speech_config") or {}


def _input_transcription(setup: dict) -> dict:
    return get(setup, "inputAudioTranscription", "input_audio_transcription") or {}


# Fields the bot sends that the Gemini Developer API may refuse for 3.8 (unverified: custom vocabulary is
# documented for Vertex's 3.8, the Live docs say native-audio models choose their language themselves).
# Not refused by default; a test adds them to SETUP_RULES to see the bot survive a refusal.
DOUBTFUL_RULES: tuple[SetupRule, ...] = (
    SetupRule("input_audio_transcription.custom_vocabulary",
              lambda s: bool(get(_input_transcription(s), "customVocabulary", "custom_vocabulary")),
              'Invalid JSON payload received. Unknown name "custom_vocabulary" at '
              "'setup.input_audio_transcription': Cannot find field."),
    SetupRule("speech_config.language_code",
              lambda s: get(_speech(s), "languageCode", "language_code") is not None,
              "language_code is not supported for this model."),
)


def rejected_setup(setup: dict) -> SetupRule | None:
    """The first rule `setup` breaks, or None when 3.8 would accept it."""
    return next((rule for rule in SETUP_RULES if rule.present(setup)), None)


def close_reason(text: str) -> str:
    """`text` cut to what a close frame carries (the real service's long sentences arrive cut short too)."""
    return text.encode()[:CLOSE_REASON_LIMIT].decode(errors="ignore")


def declared_functions(setup: dict) -> set[str]:
    """Names of the functions the setup declares."""
    names = set()
    for tool in _tools(setup):
        for declaration in get(tool, "functionDeclarations", "function_declarations") or []:
            names.add(declaration.get("name"))
    return names


# ----- audio -------------------------------------------------------------------------------------------

def is_voiced(pcm16k: bytes) -> bool:
    """RMS at or above VOICED_RMS: what the server's activity detection counts as speech."""
    usable = len(pcm16k) - len(pcm16k) % 2
    if not usable:
        return False
    values = np.frombuffer(pcm16k[:usable], dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(values * values))) >= VOICED_RMS


def tone(ms: float, rate: int = OUTPUT_RATE, freq: float = 440.0) -> bytes:
    """A quiet sine tone as s16le mono PCM."""
    n = int(rate * ms / 1000)
    return (0.2 * 32767 * np.sin(2 * math.pi * freq * np.arange(n) / rate)).astype("<i2").tobytes()


@dataclass(slots=True)
class ActivityDetector:
    """Server-side voice activity detection, judged on the audio received (in audio time, not wall time).

    Speech starts with the first voiced chunk; it ends after `silence_ms` of unvoiced audio, or at once
    at `audioStreamEnd`. `voiced_ms` counts speech since it started (the interim transcripts follow it).
    """

    silence_ms: float | None
    speaking: bool = False
    voiced_ms: float = 0.0
    silent_ms: float = 0.0

    def feed(self, pcm16k: bytes) -> str | None:
        """Take one chunk; returns "start", "end" or None."""
        ms = len(pcm16k) / 2 / INPUT_RATE * 1000
        if is_voiced(pcm16k):
            started = not self.speaking
            self.speaking, self.silent_ms = True, 0.0
            self.voiced_ms += ms
            return "start" if started else None
        if self.speaking:
            self.silent_ms += ms
            if self.silence_ms is not None and self.silent_ms >= self.silence_ms:
                return self.end()
        return None

    def end(self) -> str | None:
        """The speech ends now (silence long enough, or the client ended the stream)."""
        if not self.speaking:
            return None
        self.speaking, self.voiced_ms, self.silent_ms = False, 0.0, 0.0
        return "end"


# ----- usage ---------------------------------------------------------------------------------------------

@dataclass(slots=True)
class ContextMeter:
    """What the model's context holds, for per-turn usage: every turn re-bills the whole context."""

    text_chars: int = 0
    audio_in_s: float = 0.0
    audio_out_s: float = 0.0
    turns: int = 0

    def usage(self, *, reply_audio_s: float, thoughts_tokens: int) -> dict:
        """One turn's `usageMetadata`; the prompt counts all context so far (old audio included)."""
        self.turns += 1
        prompt_text = self.text_chars // CHARS_PER_TEXT_TOKEN
        prompt_audio = round((self.audio_in_s + self.audio_out_s) * AUDIO_TOKENS_PER_S)
        response_audio = round(reply_audio_s * AUDIO_TOKENS_PER_S)
        self.audio_out_s += reply_audio_s
        usage: dict[str, Any] = {
            "promptTokenCount": prompt_text + prompt_audio, "responseTokenCount": response_audio,
            "thoughtsTokenCount": thoughts_tokens,
            "totalTokenCount": prompt_text + prompt_audio + response_audio + thoughts_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_text},
                                    {"modality": "AUDIO", "tokenCount": prompt_audio}],
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": response_audio}],
        }
        return usage

    def copy(self) -> ContextMeter:
        return ContextMeter(self.text_chars, self.audio_in_s, self.audio_out_s, self.turns)


# ----- scripted replies ------------------------------------------------------------------------------------

@dataclass(slots=True)
class ToolCallScript:
    """A function call the next reply makes; the client's response (or the cancellation) is recorded."""

    name: str
    args: dict = field(default_factory=dict)
    blocking: bool = False  # BLOCKING: the reply waits for the response; NON_BLOCKING (3.8's default) does not
    id: str = ""
    repeats: int = 0  # calls made again because the results said nothing


def interim_text(words: list[str], voiced_ms: float, every_ms: float) -> str | None:
    """The low-latency hypothesis so far: one more word per `every_ms` of speech, never the whole sentence."""
    shown = min(int(voiced_ms // every_ms), len(words) - 1)
    return " ".join(words[:shown]) if shown > 0 else None

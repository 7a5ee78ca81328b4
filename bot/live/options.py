"""What a `LiveSession` is given and what it reports: its retry policy, the Live setup it sends, its
lifecycle states and its figures.

These are values with no I/O, kept out of `bot.live.session` so the session module holds only the
behaviour (and stays readable); `bot.live.session` re-exports `LiveConnectOptions` and `LiveStats`.
"""

from __future__ import annotations

import dataclasses
import enum
import statistics
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from google.genai import types

from bot.audio.formats import LIVE_INPUT, LIVE_OUTPUT
from bot.config import Settings

SAFETY_CATEGORIES = (
    types.HarmCategory.HARM_CATEGORY_HARASSMENT,
    types.HarmCategory.HARM_CATEGORY_HATE_SPEECH,
    types.HarmCategory.HARM_CATEGORY_SEXUALLY_EXPLICIT,
    types.HarmCategory.HARM_CATEGORY_DANGEROUS_CONTENT,
)
LATENCY_SAMPLES = 50
# Input this loud (about -40 dBFS over a 20 ms frame) is someone talking, not a hum, a chair or comfort noise;
# the fake's voice detection uses the same level. After ANSWERABLE_SPEECH_MS of it, a healthy server always
# sends something back (at least its transcription); after noise it may send nothing at all.
SPEECH_RMS = 330.0
ANSWERABLE_SPEECH_MS = 300.0


def speech_ms(pcm16k: bytes) -> float:
    """How much of `pcm16k` (16 kHz mono s16le), in 20 ms frames, is at speech level (`SPEECH_RMS`)."""
    frame = LIVE_INPUT.bytes_for_ms(20)
    usable = len(pcm16k) - len(pcm16k) % frame
    if not usable:
        return 0.0
    frames = np.frombuffer(pcm16k[:usable], dtype="<i2").astype(np.float64).reshape(-1, frame // 2)
    loud = np.sqrt(np.mean(frames * frames, axis=1)) >= SPEECH_RMS
    return float(np.count_nonzero(loud)) * 20.0


@dataclass(frozen=True, slots=True)
class LiveConnectOptions:
    """Retry and buffering policy; tests pass small numbers."""

    max_retries: int = 5  # consecutive failed connections before giving up
    first_retry_delay: float = 0.1
    max_retry_delay: float = 5.0
    input_queue_seconds: float = 10.0  # unsent input audio kept while disconnected
    input_chunk_ms: float = 100.0  # input audio per message while a kid keeps talking (send policy: bot.live.outbound)
    replay_seconds: float = 30.0  # sent-but-unconfirmed input audio kept for replay
    stable_after: float = 10.0  # a connection up this long resets the failure count
    connect_timeout: float = 15.0  # one dial + setup; a setup that never completes costs this
    start_timeout: float = 30.0  # all of start(): dials, retries and backoff together
    close_timeout: float = 2.0
    max_reply_seconds: float = 90.0  # a reply longer than this is stopped (a server streaming forever)
    answer_timeout: float = 30.0  # input ended and not one message since: the connection is stuck

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.first_retry_delay < 0 or self.input_queue_seconds <= 0:
            raise ValueError("max_retries and first_retry_delay must be >= 0, input_queue_seconds > 0")
        if not 20 <= self.input_chunk_ms <= 1000:
            raise ValueError("input_chunk_ms must be 20–1000 (one 20 ms frame up to a second per message)")

    def retry_delay(self, attempt: int) -> float:
        """Exponential backoff: first_retry_delay, doubled per attempt, capped."""
        return min(self.first_retry_delay * 2 ** max(attempt - 1, 0), self.max_retry_delay)


@dataclass(frozen=True, slots=True)
class SetupExtras:
    """What one conversation adds to the setup: its tools, the language spoken, the words to listen for."""

    tools: tuple[types.Tool, ...] = ()
    language_code: str | None = None  # BCP-47, e.g. "es-US"; None: the service's default
    vocabulary: tuple[str, ...] = ()  # names and topic words the input transcription is biased towards
    end_of_speech_ms: int | None = None  # the server VAD's silence_duration_ms; None: the service's default

    @property
    def doubtful(self) -> tuple[str, ...]:
        """The fields set here that the Gemini Developer API may refuse for gemini-3.8-live: custom vocabulary is
        documented for Vertex's 3.8 (and the Gemini API's transcription models), and native-audio models are
        documented as choosing their language themselves. Neither is needed: the instruction names the kids and
        the language."""
        return tuple(name for name, value in (("custom_vocabulary", self.vocabulary),
                                              ("language_code", self.language_code)) if value)

    def without_doubtful(self) -> SetupExtras:
        """The same extras without the `doubtful` fields."""
        return dataclasses.replace(self, vocabulary=(), language_code=None)


NO_EXTRAS = SetupExtras()


def live_connect_config(settings: Settings, instruction: str, *, handle: str | None, seeding: bool,
                        extras: SetupExtras = NO_EXTRAS) -> types.LiveConnectConfig:
    """The setup every connection sends: audio out, both transcripts, resumption, compression, strict safety,
    and the conversation's tools, language, vocabulary and end-of-speech silence."""
    prebuilt = types.PrebuiltVoiceConfig(voice_name=settings.gemini_voice)
    return types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        speech_config=types.SpeechConfig(voice_config=types.VoiceConfig(prebuilt_voice_config=prebuilt),
                                         language_code=extras.language_code),
        system_instruction=types.Content(role="user", parts=[types.Part(text=instruction)]),
        tools=list(extras.tools) or None,
        input_audio_transcription=types.AudioTranscriptionConfig(custom_vocabulary=list(extras.vocabulary) or None),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        session_resumption=types.SessionResumptionConfig(handle=handle),
        context_window_compression=types.ContextWindowCompressionConfig(  # sizes chosen with `python -m bot.cost`
            trigger_tokens=settings.gemini_compression_trigger_tokens,
            sliding_window=types.SlidingWindow(target_tokens=settings.gemini_compression_target_tokens)),
        safety_settings=[types.SafetySetting(category=c, threshold=types.HarmBlockThreshold.BLOCK_LOW_AND_ABOVE)
                         for c in SAFETY_CATEGORIES],
        history_config=types.HistoryConfig(initial_history_in_client_content=True) if seeding else None,
        realtime_input_config=types.RealtimeInputConfig(automatic_activity_detection=types.AutomaticActivityDetection(
            silence_duration_ms=extras.end_of_speech_ms)) if extras.end_of_speech_ms else None,
    )


class LiveState(enum.Enum):
    """Where a `LiveSession` is in its life; `LiveSession._set_state` is the only writer."""

    IDLE = "idle"  # built, start() not called yet; input is queued
    CONNECTING = "connecting"  # start() is opening the first connection
    READY = "ready"  # one connection is up and input flows
    HANDING_OVER = "handing_over"  # GoAway: the old socket still delivers while the new one opens
    RECONNECTING = "reconnecting"  # the connection dropped: backing off and redialling, input is kept
    FAILED = "failed"  # gave up (`Failed` was emitted); the client stays open until close()
    CLOSED = "closed"  # close() released everything; final

    @property
    def connected(self) -> bool:
        """A socket is up and serving (during a handover, the old one)."""
        return self in (LiveState.READY, LiveState.HANDING_OVER)

    @property
    def ended(self) -> bool:
        """Failed or closed: input is ignored from now on (before start and across reconnects it is queued)."""
        return self in (LiveState.FAILED, LiveState.CLOSED)


ALLOWED_TRANSITIONS: dict[LiveState, frozenset[LiveState]] = {
    LiveState.IDLE: frozenset({LiveState.CONNECTING, LiveState.CLOSED}),
    LiveState.CONNECTING: frozenset({LiveState.READY, LiveState.FAILED, LiveState.CLOSED}),
    LiveState.READY: frozenset({LiveState.HANDING_OVER, LiveState.RECONNECTING, LiveState.FAILED, LiveState.CLOSED}),
    LiveState.HANDING_OVER: frozenset({LiveState.READY, LiveState.RECONNECTING, LiveState.FAILED, LiveState.CLOSED}),
    LiveState.RECONNECTING: frozenset({LiveState.READY, LiveState.FAILED, LiveState.CLOSED}),
    LiveState.FAILED: frozenset({LiveState.CLOSED}),
    LiveState.CLOSED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A move the table does not allow: a bug in the session, never a network condition."""

    def __init__(self, current: LiveState, new: LiveState) -> None:
        self.current, self.new = current, new
        super().__init__(f"LiveSession cannot go from {current.name} to {new.name}")


def check_transition(current: LiveState, new: LiveState) -> None:
    """Raise `IllegalTransition` unless `ALLOWED_TRANSITIONS` lets `current` become `new`."""
    if new not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition(current, new)


@dataclass(frozen=True, slots=True)
class LiveStats:
    """A snapshot for `/tutor status` and logs."""

    connected: bool
    reconnects: int
    resumed_count: int
    messages_sent: int
    audio_ms_sent: float
    audio_ms_received: float
    audio_ms_dropped: float
    last_error: str | None
    response_latency_ms: tuple[float, ...]
    frames_skipped: int = 0  # server frames this SDK could not read (skipped, connection kept)

    @property
    def response_latency_p50_ms(self) -> float | None:
        return statistics.median(self.response_latency_ms) if self.response_latency_ms else None


@dataclass(slots=True)
class LiveCounters:
    """The running figures behind `LiveStats`, including the reply latency (input end → first reply audio)."""

    reconnects: int = 0
    resumed_count: int = 0
    messages_sent: int = 0
    audio_bytes_sent: int = 0
    audio_bytes_received: int = 0
    last_error: str | None = None
    last_input_sent_at: float | None = None
    # Input the server must answer last went out: text, or the end of clear speech (noise may get no answer).
    last_prompt_at: float | None = None
    frames_skipped: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    _reply_reference: float | None = None
    _reply_started: bool = False
    _speech_ms: float = 0.0  # clear speech sent since the last audio_end

    def sent(self, kind: str, audio: bytes, now: float) -> None:
        """One message went out; the end of a kid's input (or typed text) is what a reply answers."""
        self.messages_sent += 1
        if kind == "audio":
            self.audio_bytes_sent += len(audio)
            self.last_input_sent_at = now
            self._speech_ms += speech_ms(audio)
        elif kind in ("audio_end", "text"):
            self._reply_reference = now
            if kind == "text" or self._speech_ms >= ANSWERABLE_SPEECH_MS:
                self.last_prompt_at = now
            self._speech_ms = 0.0

    def reply_audio(self, nbytes: int, now: float) -> None:
        """Reply audio arrived; the first chunk of a turn gives one latency sample."""
        if not self._reply_started:
            self._reply_started = True
            reference = self._reply_reference or self.last_input_sent_at
            if reference is not None:
                self.latencies.append((now - reference) * 1000)
            self._reply_reference = None
        self.audio_bytes_received += nbytes

    def reply_done(self) -> None:
        """The reply ended (generation_complete, or turn_complete for one without it)."""
        self._reply_started = False

    def snapshot(self, *, connected: bool, dropped_bytes: int) -> LiveStats:
        return LiveStats(
            connected=connected, reconnects=self.reconnects, resumed_count=self.resumed_count,
            messages_sent=self.messages_sent, audio_ms_sent=LIVE_INPUT.ms_for_bytes(self.audio_bytes_sent),
            audio_ms_received=LIVE_OUTPUT.ms_for_bytes(self.audio_bytes_received),
            audio_ms_dropped=LIVE_INPUT.ms_for_bytes(dropped_bytes), last_error=self.last_error,
            response_latency_ms=tuple(self.latencies), frames_skipped=self.frames_skipped,
        )

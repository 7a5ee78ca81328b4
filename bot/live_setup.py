"""The Live setup of a tutor conversation in one place: what `Conversation.start` sends, and what
`live-check` / `doctor` send to show how Gemini answers the bot's real setup."""

from __future__ import annotations

from collections.abc import Sequence

from bot import turn_taking
from bot.languages import DEFAULT_LANGUAGE, Language
from bot.levels import BUILTIN_LEVELS, Level, build_system_instruction, transcription_vocabulary
from bot.live.options import SetupExtras
from bot.tools import declarations

SAMPLE_LEVEL, SAMPLE_AGE, SAMPLE_NAMES = "space", 8, ("Ana",)
# The server's own end-of-speech wait (if it honours silence_duration_ms) is set a little past the bot's
# silence tail, so the bot's audio_stream_end decides and the server never ends a turn sooner.
SERVER_SILENCE_MARGIN_MS = 300


def tutor_setup(level: Level, age: int, kid_names: Sequence[str] = (), *, language: Language = DEFAULT_LANGUAGE,
                turn_pause_ms: int | None = None) -> tuple[str, SetupExtras]:
    """The system instruction and setup extras (tools, language, vocabulary, end-of-speech silence) of one
    tutor conversation; `turn_pause_ms` defaults to the one for `age` (`bot.turn_taking`)."""
    instruction = build_system_instruction(level, age, kid_names, language=language, tools=True)
    pause = turn_pause_ms if turn_pause_ms is not None else turn_taking.turn_pause_ms(None, age)
    extras = SetupExtras(tools=tuple(declarations()), language_code=language.code,
                         vocabulary=tuple(transcription_vocabulary(level, kid_names)),
                         end_of_speech_ms=pause + SERVER_SILENCE_MARGIN_MS)
    return instruction, extras


def sample_tutor_setup() -> tuple[str, SetupExtras]:
    """The setup a typical conversation sends (the space level, age 8, one kid), for checks."""
    return tutor_setup(BUILTIN_LEVELS[SAMPLE_LEVEL], SAMPLE_AGE, SAMPLE_NAMES)

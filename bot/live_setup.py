"""The Live setup of a tutor conversation in one place: what `Conversation.start` sends, and what
`live-check` / `doctor` send to show how Gemini answers the bot's real setup."""

from __future__ import annotations

from collections.abc import Sequence

from bot.languages import DEFAULT_LANGUAGE, Language
from bot.levels import BUILTIN_LEVELS, Level, build_system_instruction, transcription_vocabulary
from bot.live.options import SetupExtras
from bot.tools import declarations

SAMPLE_LEVEL, SAMPLE_AGE, SAMPLE_NAMES = "space", 8, ("Ana",)


def tutor_setup(level: Level, age: int, kid_names: Sequence[str] = (), *,
                language: Language = DEFAULT_LANGUAGE) -> tuple[str, SetupExtras]:
    """The system instruction and setup extras (tools, language, vocabulary) of one tutor conversation."""
    instruction = build_system_instruction(level, age, kid_names, language=language, tools=True)
    extras = SetupExtras(tools=tuple(declarations()), language_code=language.code,
                         vocabulary=tuple(transcription_vocabulary(level, kid_names)))
    return instruction, extras


def sample_tutor_setup() -> tuple[str, SetupExtras]:
    """The setup a typical conversation sends (the space level, age 8, one kid), for checks."""
    return tutor_setup(BUILTIN_LEVELS[SAMPLE_LEVEL], SAMPLE_AGE, SAMPLE_NAMES)

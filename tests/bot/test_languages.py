"""The tutor's languages, and what the chosen one and the kids' names do to the instruction and vocabulary."""

import pytest

from bot.languages import DEFAULT_LANGUAGE, LANGUAGES, language_for
from bot.levels import BUILTIN_LEVELS, MAX_VOCABULARY, build_system_instruction, custom_level, transcription_vocabulary
from tests.bot.test_tutor import live_server, world

__all__ = ["live_server", "world"]  # fixtures shared with test_tutor


def test_english_is_the_default_and_codes_are_unique():
    """Leaving the option out means English (US); each code appears once and fits Discord's 25 choices."""
    assert language_for(None) is DEFAULT_LANGUAGE and DEFAULT_LANGUAGE.code == "en-US"
    assert len(LANGUAGES) <= 25 and language_for("ES-us").name == "Spanish"


def test_an_unknown_language_is_refused():
    """A code the tutor does not speak is a ValueError (the cog turns it into a sentence)."""
    with pytest.raises(ValueError):
        language_for("tlh")


def test_instruction_restricts_the_spoken_language():
    """3.8 switches languages on its own; the instruction names the chosen one and says to stay in it."""
    text = build_system_instruction(BUILTIN_LEVELS["space"], 8, language=LANGUAGES["fr-FR"])
    assert "Always speak French (Français)" in text and "never switch languages" in text
    assert "Always speak English (US)" in build_system_instruction(BUILTIN_LEVELS["space"], 8)


def test_instruction_names_the_kids_and_the_tools_only_when_declared():
    """Names go in fenced; tool rules appear only for a session that declares the tools."""
    text = build_system_instruction(BUILTIN_LEVELS["space"], 8, ["Ana", "<Ben>"], tools=True)
    assert "Ana, ‹Ben›" in text and "alert_grown_up" in text and "end_conversation" in text
    assert "alert_grown_up" not in build_system_instruction(BUILTIN_LEVELS["space"], 8, ["Ana"])


def test_vocabulary_has_names_then_topic_words():
    """Transcription is biased to the kids' names first, then the level's own words, without repeats."""
    vocabulary = transcription_vocabulary(BUILTIN_LEVELS["dinosaurs"], ["Ana", " ana", "Ben"])
    assert vocabulary[:2] == ["Ana", "Ben"] and "Triceratops" in vocabulary
    assert len(vocabulary) <= MAX_VOCABULARY


def test_custom_levels_get_words_from_their_description():
    """A moderator's level contributes its longer, less common words."""
    level = custom_level("volcanoes", "How volcanoes erupt: magma, lava and the Ring of Fire.")
    vocabulary = transcription_vocabulary(level)
    assert {"magma", "lava", "erupt"} <= set(vocabulary) and "the" not in vocabulary


async def test_setup_carries_language_names_and_topic_words(world, live_server, repository):
    """Through the real SDK: speech_config.language_code, the instruction's rule, and custom_vocabulary with the
    kids' chosen names (of the people in the channel) and the topic's words."""
    import dataclasses

    from tests.bot.test_tutor import GUILD, request

    conversations, _, _, channel, kids = world
    for kid in kids:
        await repository.set_member_name(GUILD, kid.id, kid.display_name, set_by=kid.id)
    await conversations.start(dataclasses.replace(request(channel, level="dinosaurs"), language=LANGUAGES["de-DE"]))
    setup = live_server.connections[0].setup
    assert setup["generationConfig"]["speechConfig"]["language_code"] == "de-DE"
    instruction = setup["systemInstruction"]["parts"][0]["text"]
    assert "Always speak German (Deutsch)" in instruction and "Ana, Ben" in instruction
    assert "TutorBot" not in instruction  # bots in the channel are not kids
    vocabulary = setup["inputAudioTranscription"]["custom_vocabulary"]
    assert vocabulary[:2] == ["Ana", "Ben"] and "Triceratops" in vocabulary
    await conversations.stop(GUILD)


def test_every_label_reads_as_one_name_with_its_english_in_brackets():
    """What the language picker shows: the language's own name, then (its English name) — never brackets inside
    brackets such as "Português (Brasil) (Portuguese (Brazil))"."""
    for language in LANGUAGES.values():
        assert language.label.count("(") <= 1 and language.label.count(")") <= 1, language.label
        assert len(language.label) <= 100
    assert LANGUAGES["pt-BR"].label == "Português do Brasil (Brazilian Portuguese)"
    assert LANGUAGES["es-US"].label == "Español (Spanish)" and LANGUAGES["en-US"].label == "English (US)"

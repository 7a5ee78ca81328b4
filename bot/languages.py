"""The languages the tutor can speak: what `/tutor start language:` offers and what the Live setup sends.

The list is the Live API's native-audio languages (24, the `speech_config.language_code` values its
docs list); `gemini-3.8-live` switches language on its own when a child does, so the chosen language
is also written into the system instruction, which is how Google says to restrict it (Vertex "configure
language and voice" page, `gemini_live_38.md` §A). English (US) is the default.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Language:
    """One spoken language: its BCP-47 code, its English name and its own name (what a kid recognises)."""

    code: str
    name: str
    native: str

    @property
    def label(self) -> str:
        """`Español (Spanish)`, or just `English (US)`: what the slash command's choice shows."""
        return self.name if self.native == self.name else f"{self.native} ({self.name})"


LANGUAGES: dict[str, Language] = {lang.code: lang for lang in (
    Language("en-US", "English (US)", "English (US)"),
    Language("en-IN", "English (India)", "English (India)"),
    Language("es-US", "Spanish", "Español"),
    Language("fr-FR", "French", "Français"),
    Language("de-DE", "German", "Deutsch"),
    Language("it-IT", "Italian", "Italiano"),
    Language("pt-BR", "Brazilian Portuguese", "Português do Brasil"),
    Language("nl-NL", "Dutch", "Nederlands"),
    Language("pl-PL", "Polish", "Polski"),
    Language("ro-RO", "Romanian", "Română"),
    Language("ru-RU", "Russian", "Русский"),
    Language("uk-UA", "Ukrainian", "Українська"),
    Language("tr-TR", "Turkish", "Türkçe"),
    Language("ar-EG", "Egyptian Arabic", "العربية"),
    Language("hi-IN", "Hindi", "हिन्दी"),
    Language("bn-BD", "Bengali", "বাংলা"),
    Language("mr-IN", "Marathi", "मराठी"),
    Language("ta-IN", "Tamil", "தமிழ்"),
    Language("te-IN", "Telugu", "తెలుగు"),
    Language("id-ID", "Indonesian", "Bahasa Indonesia"),
    Language("vi-VN", "Vietnamese", "Tiếng Việt"),
    Language("th-TH", "Thai", "ไทย"),
    Language("ja-JP", "Japanese", "日本語"),
    Language("ko-KR", "Korean", "한국어"),
)}
DEFAULT_LANGUAGE = LANGUAGES["en-US"]


def language_for(code: str | None) -> Language:
    """The language with this code (case-insensitive); None → English. ValueError for one we do not offer."""
    if code is None:
        return DEFAULT_LANGUAGE
    wanted = code.strip().lower()
    for language in LANGUAGES.values():
        if language.code.lower() == wanted:
            return language
    raise ValueError(f"not a language the tutor speaks: {code[:20]!r}")

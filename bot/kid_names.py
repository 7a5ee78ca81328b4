"""The name a kid chose for the tutor to use, so a kid on a parent's account is not called by the parent's name.

A kid sets it with `/tutor name`, a moderator with `/tutor-settings kid-name`; it is stored per server and member
(`Repository.set_member_name`). It is untrusted text: kept to letters, spaces and a few marks, and fenced as data
wherever it reaches the tutor's instruction (`bot.levels.build_system_instruction`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping

from bot.errors import TutorError

MAX_LENGTH = 32
_ALLOWED_MARKS = {" ", "-", "'", "’", "."}


class InvalidKidName(TutorError):
    def __init__(self) -> None:
        super().__init__(f"A name can have letters, spaces, - and ' (up to {MAX_LENGTH} characters). Try another one?")


def clean_kid_name(text: str) -> str:
    """The name as it will be used, or InvalidKidName: letters (any alphabet), spaces, - ' . only."""
    name = " ".join(unicodedata.normalize("NFC", text).split())
    if not 1 <= len(name) <= MAX_LENGTH or not any(ch.isalpha() for ch in name):
        raise InvalidKidName
    for ch in name:
        if not (ch.isalpha() or ch in _ALLOWED_MARKS or unicodedata.category(ch) in ("Mn", "Mc")):
            raise InvalidKidName
    return name


def name_for(member_id: int, display_name: str, chosen: Mapping[int, str]) -> str:
    """What the transcript and `/tutor status` call a member: their chosen name, else their display name."""
    return chosen.get(member_id) or display_name


def names_to_tell_the_tutor(member_ids: Iterable[int], chosen: Mapping[int, str]) -> list[str]:
    """The chosen names of these members; a member without one is not named to the tutor (their display name
    may be a parent's)."""
    return [chosen[m] for m in member_ids if m in chosen]

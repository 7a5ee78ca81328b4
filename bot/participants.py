"""Who is in a tutor call, and what that lets them do: pure rules over a voice channel's members.

One place for each rule, so the recording notice, the README, `/tutor stop`, `/tutor say` and history seeding
cannot drift apart. `channel` is anything with `.members` (discord.py fills it from voice states).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Who may end a running conversation, as the notice and the README say it (tests hold both to this text).
STOP_RULE = "anyone in the call, the person who started it, or a moderator"


def humans_in(channel: Any) -> list[Any]:
    """The members in the voice channel who are people, not bots (the tutor itself included)."""
    return [m for m in getattr(channel, "members", None) or [] if not getattr(m, "bot", False)]


def in_call(member_id: int, channel: Any) -> bool:
    """True when this member is one of the people in the voice channel."""
    return any(m.id == member_id for m in humans_in(channel))


def may_stop(member_id: int, *, channel: Any, starter_id: int, is_moderator: bool) -> bool:
    """`STOP_RULE`: someone in the call, whoever started it (even after leaving), or a moderator."""
    return is_moderator or member_id == starter_id or in_call(member_id, channel)


def may_type(member_id: int, *, channel: Any) -> bool:
    """Only the kids in the call talk to the tutor, typed or spoken."""
    return in_call(member_id, channel)


def participants(channel: Any, also: Iterable[int] = ()) -> frozenset[int]:
    """Member ids of the people in the call, plus `also` (the starter, who may not have joined yet)."""
    return frozenset(m.id for m in humans_in(channel)) | frozenset(also)

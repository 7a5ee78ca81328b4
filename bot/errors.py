"""Domain errors: each carries the one sentence a user (or operator) should read.

The cogs' central error handler sends `str(error)` ephemerally for any `TutorError`; anything else is
unexpected and gets a generic apology plus a reference id in the logs.
"""

from __future__ import annotations


class TutorError(Exception):
    """An expected failure whose message is safe and useful to show to the person who asked."""


class NotInVoiceChannel(TutorError):
    def __init__(self) -> None:
        super().__init__("Join a voice channel first, then run `/tutor start` again.")


class MissingVoicePermissions(TutorError):
    def __init__(self, channel_name: str, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(f"I can't use **{channel_name}**: I need the {', '.join(missing)} permission(s) there.")


class AlreadyRunning(TutorError):
    def __init__(self, channel_mention: str) -> None:
        super().__init__(f"A tutor conversation is already running in {channel_mention}. "
                         "Join it there, or ask for `/tutor stop` first.")


class NotRunning(TutorError):
    def __init__(self) -> None:
        super().__init__("No tutor conversation is running in this server. Start one with `/tutor start`.")


class UnknownLevel(TutorError):
    def __init__(self, name: str) -> None:
        super().__init__(f"There is no level called “{name[:50]}”. Pick one from the list as you type.")


class InvalidAge(TutorError, ValueError):
    """Also a ValueError, so code that validates input generically catches it."""

    def __init__(self, age: int) -> None:
        super().__init__(f"The age must be between 4 and 14 (got {age}).")


class NotInCall(TutorError):
    """`/tutor say` from someone who is not in the tutor's voice channel: only the kids in the call talk to it."""

    def __init__(self, channel_mention: str) -> None:
        super().__init__(f"Only the people in {channel_mention} can talk to the tutor. Join the call there first.")


class TextTooLong(TutorError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"That message is too long: keep it under {limit} characters.")


class DailyLimitReached(TutorError):
    def __init__(self, minutes: int) -> None:
        super().__init__(f"This server has used its {minutes} tutor minutes for today. See you tomorrow!")


class NotFound(TutorError):
    """Same sentence whether the row is missing or belongs to another server (no existence leak)."""

    def __init__(self, what: str = "session") -> None:
        super().__init__(f"No {what} with that id in this server.")


class SessionStillRunning(TutorError):
    """A moderator action on a session that is still being recorded."""

    def __init__(self, action: str) -> None:
        super().__init__(f"That session is still running: stop it with `/tutor stop` before you {action} it.")


class BadOption(TutorError):
    """An option value outside what the command accepts (Discord's own limits can be bypassed)."""


class InvalidSetting(TutorError):
    """A value the repository refused; the sentence says the allowed range and that nothing changed."""


class VoiceConnectFailed(TutorError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"I couldn't join the voice channel: {detail}")

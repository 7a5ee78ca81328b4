"""Domain errors: each carries the one sentence a user (or operator) should read.

The cogs' central error handler sends `str(error)` ephemerally for any `TutorError`; anything else is
unexpected and gets a generic apology plus a reference id in the logs.
"""

from __future__ import annotations

from bot.endings import CANT_TALK


class TutorError(Exception):
    """An expected failure whose message is safe and useful to show to the person who asked.

    The message is what a kid may read: kind, plain, no technical words. `detail` (when set) is the
    operator's reason, for the logs and the moderators' alerts channel, never for the kid.
    """

    detail: str | None = None


class NotInVoiceChannel(TutorError):
    def __init__(self) -> None:
        super().__init__("Join a voice channel first, then run `/tutor start` again.")


class MissingVoicePermissions(TutorError):
    def __init__(self, channel_name: str, missing: list[str]) -> None:
        self.missing = missing
        plural = "s" if len(missing) > 1 else ""
        super().__init__(f"I'm not allowed to join **{channel_name}** yet. Ask a grown-up to give me the "
                         f"{_and(missing)} permission{plural} there.")


class AlreadyRunning(TutorError):
    def __init__(self, channel_mention: str) -> None:
        super().__init__(f"The tutor is already talking in {channel_mention} — come and join in there!")


class StartStopped(TutorError):
    def __init__(self) -> None:
        super().__init__("The tutor was stopped before it could join. Start it again with `/tutor start` any time!")


class NotRunning(TutorError):
    def __init__(self) -> None:
        super().__init__("The tutor isn't in a call right now. Start it with `/tutor start`!")


class UnknownLevel(TutorError):
    def __init__(self, name: str) -> None:
        super().__init__(f"There's no topic called “{name[:50]}”. Start typing and pick one from the list.")


class InvalidAge(TutorError, ValueError):
    """Also a ValueError, so code that validates input generically catches it."""

    def __init__(self, age: int) -> None:
        super().__init__("The tutor is for ages 4 to 14 — please pick an age between 4 and 14.")


class NotInCall(TutorError):
    """`/tutor say` from someone who is not in the tutor's voice channel: only the kids in the call talk to it."""

    def __init__(self, channel_mention: str) -> None:
        super().__init__(f"Only the people in {channel_mention} can talk to the tutor. Join the call there first.")


class TextTooLong(TutorError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"Please type a message of 1 to {limit} characters.")


class DailyLimitReached(TutorError):
    def __init__(self, minutes: int, resets: str = "at midnight (UTC time)") -> None:
        super().__init__("⏰ You've used today's tutor time — see you tomorrow!\n"
                         f"-# For grown-ups: this server's limit is {minutes} minutes a day; it starts again {resets}.")


class DailyBudgetSpent(TutorError):
    """The server's daily budget (dollars) is used up; kid words, no money: moderators see it in the settings."""

    def __init__(self, resets: str = "at midnight (UTC time)") -> None:
        super().__init__("⏰ The tutor has done all its talking for today in this server. See you tomorrow!\n"
                         f"-# For grown-ups: this server's daily tutor budget is used up; it starts again {resets} "
                         "(`/tutor-settings show` has the amounts).")


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
        self.detail = f"Joining the voice channel failed: {detail}"
        super().__init__("I couldn't join your voice channel just now. Please try again in a minute — if it keeps "
                         "happening, ask a grown-up to check on me.")


class TutorUnavailable(TutorError):
    """Gemini Live could not be reached or refused the session at `/tutor start`: the kid reads the kind
    sentence they read when a running call fails; the reason (a bad key, the quota, a timeout) is `detail`."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(CANT_TALK)


def _and(items: list[str]) -> str:
    """"A", "A and B", "A, B and C"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"

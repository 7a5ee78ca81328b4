"""Why a conversation ended, in two voices: the reason stored for parents (and logs), and what kids read.

The stored reason is a short phrase a parent understands ("everyone left the voice channel"); it is also
what `/transcripts` shows as "why it ended". Kids get `farewell(reason)`: a kind sentence without
technical words, posted in the voice channel's chat when the tutor leaves.
"""

from __future__ import annotations

import re

STOPPED_BY_COMMAND = "stopped with /tutor stop"
SHUTTING_DOWN = "bot shutting down"
RESTARTED = "bot restarted"
FAILED_TO_START = "failed to start"
MOVED = "I was moved to another voice channel"
DISCONNECTED = "I was disconnected from the voice channel"
EVERYONE_LEFT = "everyone left the voice channel"
LIVE_FAILED = "Gemini Live failed: {detail}"

# What kids read when the tutor could not carry on; the technical reason goes to the alerts channel and logs.
CANT_TALK = "😕 Sorry, the tutor can't talk right now. Ask a grown-up to check on it, then try `/tutor start` again."


def failed_to_start(detail: str | None = None) -> str:
    """What a parent reads for a start that failed: with the operator's reason when there is one (a refused
    key, a voice channel that could not be joined), so a server without an alerts channel still learns why."""
    return f"{FAILED_TO_START}: {' '.join(detail.split())[:300]}" if detail else FAILED_TO_START


def session_limit(minutes: int) -> str:
    return f"the session reached its {minutes}-minute limit"


def daily_limit(minutes: int) -> str:
    return f"the server reached its {minutes} tutor minutes for today"


def daily_budget(budget: str, spent: str) -> str:
    """The server's dollars for today are spent (`budget`/`spent` already formatted, e.g. "$5.00")."""
    return f"the server reached its {budget} tutor budget for today ({spent} spent)"


TUTOR_ENDED = "the tutor ended the call"


def tutor_ended(reason: str) -> str:
    """The tutor ended the call with end_conversation; `reason` is the tutor's own few words."""
    return f"{TUTOR_ENDED}: {' '.join(reason.split())[:120] or 'the children said goodbye'}"


_SESSION_LIMIT = re.compile(r"the session reached its (\d+)-minute limit")
_DAILY_BUDGET = re.compile(r"the server reached its \$[\d.,]+ tutor budget for today \(\$[\d.,]+ spent\)")
_DAILY_LIMIT = re.compile(r"the server reached its (\d+) tutor minutes for today")
_FAREWELLS = {
    STOPPED_BY_COMMAND: "👋 Bye for now! {talked} Thanks for learning together!",
    MOVED: "👋 Someone moved the tutor to another channel, so it said goodbye. {talked} "
           "Start it again with `/tutor start` whenever you like.",
    DISCONNECTED: "👋 The tutor lost its place in the call, so it had to go. {talked} "
                  "You can start it again with `/tutor start`.",
    EVERYONE_LEFT: "👋 Everyone left, so the tutor said goodbye. {talked} See you next time!",
    SHUTTING_DOWN: "👋 The tutor had to go for a little while. {talked} Try `/tutor start` again later.",
}


def talked_for(seconds: float) -> str:
    """"We talked for 12 minutes." in words a kid reads easily."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "We talked for less than a minute."
    return f"We talked for {minutes} minute{'s' if minutes != 1 else ''}."


def farewell(reason: str, seconds: float) -> str:
    """What the kids read when the tutor leaves for `reason` after `seconds` of talking."""
    talked = talked_for(seconds)
    if reason in _FAREWELLS:
        return _FAREWELLS[reason].format(talked=talked)
    if _SESSION_LIMIT.fullmatch(reason):
        return f"⏰ That's the end of this session. {talked} Great talking with you — see you next time!"
    if reason.startswith(TUTOR_ENDED):
        return f"👋 Bye for now! {talked} Thanks for learning together — see you next time!"
    if _DAILY_LIMIT.fullmatch(reason) or _DAILY_BUDGET.fullmatch(reason):  # kids hear no money talk
        return f"⏰ You've used today's tutor time — see you tomorrow! {talked}"
    if reason.startswith(LIVE_FAILED.format(detail="")):
        return CANT_TALK
    return f"👋 The tutor has left. {talked} Thanks for learning together!"

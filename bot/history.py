"""Which earlier turns may seed a new conversation's Live history: pure rules over stored turns.

An exchange is a kid's prompt (one or more child turns) and the tutor's answer to it, within one session.
When any turn of an exchange is flagged (a blocked reply, an alert about the child's words), the whole
exchange is left out: replaying either side would bring the unsafe topic straight back. Rows from before
both sides were flagged have only the tutor's turn flagged; the exchange rule covers them too. Which
sessions the candidates come from (only ones a current participant took part in) is the repository's query.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.live.buffers import HistoryTurn
from bot.prompting import as_data
from bot.storage.models import TurnRow


def exchanges(turns: Sequence[TurnRow]) -> list[list[TurnRow]]:
    """Child/tutor turns (oldest first) grouped into exchanges: a new one starts at the first child turn
    after a tutor turn, or when the session changes."""
    groups: list[list[TurnRow]] = []
    for turn in turns:
        if turn.role not in ("child", "tutor"):
            continue
        last = groups[-1][-1] if groups else None
        if last is None or last.session_id != turn.session_id or (last.role == "tutor" and turn.role == "child"):
            groups.append([])
        groups[-1].append(turn)
    return groups


def seedable(turns: Sequence[TurnRow]) -> list[HistoryTurn]:
    """The turns that may be replayed to Live, oldest first: no flagged exchange, no empty turn, and the
    words as data (a kid's can never read as a note from the app). A reply at the very start whose prompt is
    not among `turns` is left out too: that prompt may have been flagged."""
    groups = exchanges(turns)
    if groups and groups[0][0].role == "tutor":  # the oldest reply's prompt fell outside the window: unknown
        groups = groups[1:]
    kept = [turn for group in groups if not any(t.flagged for t in group) for turn in group]
    return [HistoryTurn(t.role, as_data(t.text)) for t in kept if t.text.strip()]

"""When input audio reached the Live socket: a timed `send_outgoing`, shared by the benches.

`install()` wraps `bot.live.outbound.send_outgoing` so every audio message records (monotonic time it was
written, audio bytes written so far on that genai session). `written_at(session, n)` answers when the
message carrying the n-th byte handed over had been written — a frame's real departure, whatever the
send policy held it for.
"""

from __future__ import annotations

import time
from typing import Any

import bot.live.outbound

_log: dict[int, list[tuple[float, int]]] = {}  # id(genai session) → [(written at, audio bytes so far)]
_real_send = bot.live.outbound.send_outgoing


async def _timed_send(session: object, message: Any) -> None:
    await _real_send(session, message)
    if message.kind == "audio":
        log = _log.setdefault(id(session), [])
        log.append((time.monotonic(), (log[-1][1] if log else 0) + len(message.audio)))


def install() -> None:
    """Time every message the bot's Live sender writes (idempotent)."""
    bot.live.outbound.send_outgoing = _timed_send


def written_at(session: object, through_byte: int) -> float | None:
    """When the message carrying audio byte number `through_byte` (1-based) on `session` was written."""
    return next((t for t, total in _log.get(id(session), ()) if total >= through_byte), None)


def clear() -> None:
    _log.clear()

"""Reading server frames ourselves: the one documented shim into google-genai's Live internals.

Why: `AsyncSession.receive()` lets any frame it cannot read end the connection — a non-JSON frame raises
ValueError, a frame with only unknown or null fields raises TypeError (`APIError.raise_error(None, …)`, an
SDK bug), a field of the wrong type raises pydantic's ValidationError. Each of those cut the reply in
progress and, through the replay after the reconnect, made the tutor answer twice. Here a frame is read
the way the SDK reads it, but an unreadable one is skipped (counted and logged), and a frame with one bad
field keeps its good ones.

What it uses of the SDK (google-genai 3.6.x), checked by `frame_shim_problems()` (a test asserts it is empty):
* `AsyncSession._ws`: the websockets `ClientConnection` (`recv(decode=False)`);
* `_live_converters._LiveServerMessage_from_mldev`: wire JSON → the SDK's field names (unknown keys dropped);
* `types.LiveServerMessage._from_response(response=…, kwargs={})`: the pydantic model, as `_receive` builds it;
* a close surfaces exactly as in `_receive`: `errors.APIError.raise_error(code, reason, None)`.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from google.genai import _live_converters, errors, live, types
from websockets.exceptions import ConnectionClosed
from websockets.frames import CLOSE_CODE_EXPLANATIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Skipped:
    """What could not be read of one frame: a reason for the log (never the frame's content)."""

    reason: str
    size: int


def parse_frame(raw: bytes | str) -> tuple[types.LiveServerMessage | None, Skipped | None]:
    """One frame as the SDK would read it; the message is None when nothing in it could be read."""
    size = len(raw)
    if not raw:
        return types.LiveServerMessage(), None  # the SDK yields an empty message too
    try:
        response = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, Skipped("not JSON", size)
    if not isinstance(response, dict):
        return None, Skipped(f"JSON {type(response).__name__}, not an object", size)
    converted = _live_converters._LiveServerMessage_from_mldev(response)
    if not converted and response:  # (`{}` is an empty message, as the SDK yields it)
        return None, Skipped(f"no field this SDK knows (keys: {', '.join(sorted(response))[:80] or 'none'})", size)
    try:
        return _model(converted), None
    except Exception:  # pydantic ValidationError and friends: salvage field by field
        return _salvage(converted, size)


def _model(fields: dict) -> types.LiveServerMessage:
    return types.LiveServerMessage._from_response(response=fields, kwargs={})


def _readable(fields: dict) -> bool:
    try:
        _model(fields)
    except Exception:
        return False
    return True


def _salvage(converted: dict, size: int) -> tuple[types.LiveServerMessage | None, Skipped]:
    """Keep every top-level field (and every part of a server_content) that reads on its own."""
    kept: dict = {}
    bad: list[str] = []
    for key, value in converted.items():
        if _readable({key: value}):
            kept[key] = value
        elif key == "server_content" and isinstance(value, dict):
            parts = {sub: v for sub, v in value.items() if _readable({key: {sub: v}})}
            bad += [f"{key}.{sub}" for sub in value if sub not in parts]
            if parts:
                kept[key] = parts
        else:
            bad.append(key)
    skipped = Skipped(f"unreadable field(s): {', '.join(bad)[:120]}", size)
    return (_model(kept) if kept else None), skipped


async def receive_messages(session: live.AsyncSession,
                           on_skip: Callable[[Skipped], None]) -> AsyncIterator[types.LiveServerMessage]:
    """Every readable message from `session`, forever; a close raises `errors.APIError` as the SDK's would."""
    ws = session._ws
    while True:
        try:
            raw = await ws.recv(decode=False)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else 1006
            reason = closed.rcvd.reason if closed.rcvd else CLOSE_CODE_EXPLANATIONS.get(1006, "Abnormal closure.")
            errors.APIError.raise_error(code, reason, None)
        message, skipped = parse_frame(raw)
        if skipped is not None:
            on_skip(skipped)
        if message is not None:
            yield message


def frame_shim_problems() -> list[str]:
    """What is missing of the SDK internals this module uses (empty = compatible)."""
    problems = []
    if not callable(getattr(_live_converters, "_LiveServerMessage_from_mldev", None)):
        problems.append("google.genai._live_converters._LiveServerMessage_from_mldev is gone")
    if not callable(getattr(types.LiveServerMessage, "_from_response", None)):
        problems.append("types.LiveServerMessage._from_response is gone")
    if "self._ws = " not in inspect.getsource(live.AsyncSession.__init__):
        problems.append("AsyncSession no longer keeps its websocket in _ws")
    if "decode=False" not in inspect.getsource(live.AsyncSession._receive):
        problems.append("AsyncSession._receive no longer reads frames with recv(decode=False)")
    return problems

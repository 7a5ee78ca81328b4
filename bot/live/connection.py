"""One Gemini Live websocket: dialled with the bot's setup, seeded when fresh, closed within a bound.

`LiveSession`'s supervisor decides *when* to open or drop a connection; this module only knows *how*:
the genai client (where `SSL_CERT_FILE` is read), the setup (`bot.live.options.live_connect_config`),
the initial history a fresh connection is seeded with, and a close that cannot hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from google import genai
from google.genai import types

from bot.config import Settings
from bot.live.buffers import HistoryTurn, history_contents
from bot.live.options import NO_EXTRAS, SetupExtras, live_connect_config

DEFAULT_TIME_LEFT_S = 5.0  # a GoAway without a readable time_left: assume little time
MIN_HANDOVER_MARGIN_S = 0.5
MAX_HANDOVER_MARGIN_S = 5.0


@dataclass(slots=True)
class Connection:
    """One open websocket (a genai `AsyncSession`) and what the session tracks about it."""

    number: int
    session: object  # genai AsyncSession
    stack: contextlib.AsyncExitStack
    resumed: bool
    connected_at: float = field(default_factory=time.monotonic)
    next_index: int = 1  # the client message index of the next send; the setup message is index 0
    last_message_at: float = field(default_factory=time.monotonic)  # the newest server message (or the connect)
    go_away_deadline: float | None = None  # GoAway came: hand over before this (monotonic)
    replacing: bool = False  # the replacement is being dialled with the handle chosen then


def make_client(settings: Settings) -> genai.Client:
    """The genai client for `settings`; SSL_CERT_FILE (a custom CA, e.g. a proxy or the test server) is read here."""
    options = types.HttpOptions(api_version=settings.gemini_api_version, base_url=settings.gemini_base_url)
    return genai.Client(api_key=settings.gemini_api_key.get_secret_value(), http_options=options)


async def open_connection(client: genai.Client, settings: Settings, instruction: str, *, number: int,
                          handle: str | None, seed: Sequence[HistoryTurn], within: float,
                          extras: SetupExtras = NO_EXTRAS) -> Connection:
    """Dial and send the setup (resuming `handle` if given); a fresh connection is seeded with `seed`.

    Gives up after `within` seconds (TimeoutError) and otherwise raises whatever the SDK raises (classified
    by `bot.live.failures`); nothing is left open on failure.
    """
    stack = contextlib.AsyncExitStack()
    try:
        async with asyncio.timeout(within):
            session = await stack.enter_async_context(client.aio.live.connect(
                model=settings.gemini_model,
                config=live_connect_config(settings, instruction, handle=handle, seeding=bool(seed), extras=extras)))
            conn = Connection(number, session, stack, resumed=handle is not None)
            if seed:
                # With initial_history_in_client_content the server reads client content until a
                # turn_complete=True, which ends the history without asking for a reply.
                await session.send_client_content(turns=history_contents(seed), turn_complete=True)
                conn.next_index += 1
    except BaseException:
        with contextlib.suppress(Exception):
            await stack.aclose()
        raise
    return conn


async def close_connection(conn: Connection, within: float) -> None:
    """Close the websocket (code 1000), waiting at most `within` seconds; never raises."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        async with asyncio.timeout(within):
            await conn.stack.aclose()


def handover_deadline(time_left: str | None, now: float) -> float:
    """When to be on the new connection at the latest, given GoAway's `time_left` ("60s", "1.5s", None).

    A reply in progress may finish on the old socket until then; the margin leaves time to dial.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", time_left or "")
    seconds = float(match.group(1)) if match else DEFAULT_TIME_LEFT_S
    return now + max(0.0, seconds - min(MAX_HANDOVER_MARGIN_S, max(MIN_HANDOVER_MARGIN_S, seconds / 4)))

"""One Gemini Live websocket: dialled with the bot's setup, seeded when fresh, closed within a bound.

`LiveSession`'s supervisor decides *when* to open or drop a connection; this module only knows *how*:
the genai client (where `SSL_CERT_FILE` is read), the setup (`bot.live.options.live_connect_config`),
the initial history a fresh connection is seeded with, and a close that cannot hang. `Dialler` dials one
session's connections: the first one until it is up (the start's retries, and the fallback when the
service refuses the setup's doubtful fields), every later one once per call (the supervisor retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from google import genai
from google.genai import types

from bot.config import Settings
from bot.live.buffers import HistoryTurn, history_contents
from bot.live.failures import Verdict, classify_for, is_auth_problem
from bot.live.options import NO_EXTRAS, LiveConnectOptions, LiveCounters, SetupExtras, live_connect_config

log = logging.getLogger(__name__)

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


class StartFailed(Exception):
    """`Dialler.dial_first` could not open a connection and retrying cannot help; `verdict` says why."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict


class Dialler:
    """Opens one session's connections with its setup, numbered; owns the genai client.

    Once the service refuses the setup's doubtful fields (`SetupExtras.doubtful`), every later connection
    leaves them out and `setup_refusal` says why, for the operator.
    """

    def __init__(self, settings: Settings, instruction: str, extras: SetupExtras, *, session_id: str,
                 options: LiveConnectOptions, counters: LiveCounters) -> None:
        self._settings = settings
        self._instruction = instruction
        self._extras = extras  # tools, language, vocabulary: sent in every connection's setup
        self._session_id = session_id
        self._options = options
        self._counters = counters
        self._client: genai.Client | None = None  # made at the first dial: SSL_CERT_FILE is read then
        self._count = 0
        self.setup_refusal: str | None = None  # None: Gemini accepted the full setup

    async def dial_first(self, seed: Sequence[HistoryTurn]) -> Connection:
        """Dial until the first connection is up: transient failures are retried with backoff, a refused setup
        once more without its doubtful fields; raises `StartFailed` once retrying cannot help."""
        failures = 0
        while True:
            try:
                return await self.open(None, seed)
            except Exception as exc:
                verdict = classify_for(self._settings, exc)
                if self._drop_doubtful_fields(verdict):
                    continue
                failures += 1
                if verdict.permanent:
                    raise StartFailed(verdict) from None
                if failures > self._options.max_retries:
                    raise StartFailed(Verdict(f"Could not connect to Gemini after {failures} tries "
                                              f"({verdict.reason}).", False, verdict.code)) from None
                self._counters.last_error = verdict.reason
                await asyncio.sleep(self._options.retry_delay(failures))

    async def open(self, handle: str | None, seed: Sequence[HistoryTurn]) -> Connection:
        """Dial the next connection once: resume `handle`, or start fresh seeded with `seed`."""
        if self._client is None:
            self._client = make_client(self._settings)
        self._count += 1
        number = self._count
        log.info("live.connecting", extra={"live_session": self._session_id, "connection": number,
                                           "resume": handle is not None})
        conn = await open_connection(self._client, self._settings, self._instruction, number=number, handle=handle,
                                     seed=seed, within=self._options.connect_timeout, extras=self._extras)
        log.info("live.connected", extra={"live_session": self._session_id, "connection": number,
                                          "resumed": conn.resumed, "seeded_turns": len(seed)})
        return conn

    def _drop_doubtful_fields(self, verdict: Verdict) -> bool:
        """The setup was refused (1007, not the key): if it carries fields the service may not know, drop them
        for this session (every later connection too) and say so; True when there is something to retry."""
        dropped = self._extras.doubtful
        if verdict.code != 1007 or is_auth_problem(verdict) or not dropped:
            return False
        self.setup_refusal = f"{verdict.reason} Retried without {' and '.join(dropped)}."
        self._extras = self._extras.without_doubtful()
        log.warning("live.setup_refused", extra={"live_session": self._session_id, "reason": verdict.reason,
                                                  "dropped": ",".join(dropped)})
        return True

    async def close(self) -> None:
        """Release the genai client; never raises."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aio.aclose()


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

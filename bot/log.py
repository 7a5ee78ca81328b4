"""Structured logging: one line per event, `key=value` fields, secrets scrubbed.

Call sites log an event name plus context through `extra`, e.g.
`log.info("live.reconnected", extra={"guild_id": 1, "attempt": 2})`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO
from urllib.parse import quote, quote_plus

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, object]:
    """The `extra` fields attached to a record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class SecretScrubber:
    """Replaces every known secret, in every spelling a log line can carry it, with `***`.

    Applied by the formatters to each piece they write (message, each `extra` field, exception text and
    traceback, stack) and then to the whole line, so a secret cannot slip through a field nobody thought of.
    Spellings: as is, JSON-escaped (the json format), URL-quoted (a connection URL), repr-escaped (a
    traceback's locals or a repr in a message).
    """

    def __init__(self, secrets: list[str]) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if len(secret) >= 6:
                variants |= {secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret),
                             repr(secret)[1:-1]}
        self._variants = sorted(variants, key=len, reverse=True)  # longest first: no partial leftovers

    def __call__(self, text: str) -> str:
        for variant in self._variants:
            if variant in text:
                text = text.replace(variant, "***")
        return text


def _no_secrets(text: str) -> str:
    return text


class _ScrubbingFormatter(logging.Formatter):
    """The pieces of a record, each scrubbed; subclasses lay them out."""

    def __init__(self, scrub: SecretScrubber | None = None) -> None:
        super().__init__()
        self._scrub = scrub or _no_secrets

    def pieces(self, record: logging.LogRecord) -> tuple[str, dict[str, object], str | None, str | None]:
        """(message, extra fields, exception text, stack), every string scrubbed; values that are not plain
        numbers, booleans or None become scrubbed text."""
        fields = {key: value if isinstance(value, int | float | bool) or value is None else self._scrub(str(value))
                  for key, value in record_fields(record).items()}
        exc = self._scrub(self.formatException(record.exc_info)) if record.exc_info else None
        stack = self._scrub(self.formatStack(record.stack_info)) if record.stack_info else None
        return self._scrub(record.getMessage()), fields, exc, stack


class KeyValueFormatter(_ScrubbingFormatter):
    """`2026-11-25T16:00:00Z INFO bot.live event key=value ...` — grep-able and readable."""

    def format(self, record: logging.LogRecord) -> str:
        message, fields, exc, stack = self.pieces(record)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{stamp}.{int(record.msecs):03d}Z", record.levelname, record.name, message]
        for key, value in fields.items():
            text = str(value)
            parts.append(f"{key}={json.dumps(text) if (' ' in text or not text) else text}")
        line = " ".join(parts)
        for block in (exc, stack):
            if block:
                line += "\n" + block
        return self._scrub(line)


class JsonFormatter(_ScrubbingFormatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        message, fields, exc, stack = self.pieces(record)
        payload: dict[str, object] = {"ts": record.created, "level": record.levelname, "logger": record.name,
                                      "event": message, **fields}
        if exc:
            payload["exc"] = exc
        if stack:
            payload["stack"] = stack
        return self._scrub(json.dumps(payload))


def setup_logging(level: str | int = "INFO", fmt: str = "text", secrets: list[str] | None = None,
                  stream: TextIO | None = None) -> None:
    """Install one handler (stdout unless `stream` says otherwise) on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tutor_handler", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler._tutor_handler = True  # type: ignore[attr-defined]
    scrub = SecretScrubber(secrets or [])
    handler.setFormatter(JsonFormatter(scrub) if fmt == "json" else KeyValueFormatter(scrub))
    root.addHandler(handler)
    root.setLevel(level)
    # voice-recv logs every packet from an unknown SSRC at INFO; discord.py's gateway is chatty too.
    logging.getLogger("discord.ext.voice_recv.reader").setLevel(logging.WARNING)
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)

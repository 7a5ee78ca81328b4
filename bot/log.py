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

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, object]:
    """The `extra` fields attached to a record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class KeyValueFormatter(logging.Formatter):
    """`2026-11-25T16:00:00Z INFO bot.live event key=value ...` — grep-able and readable."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{stamp}.{int(record.msecs):03d}Z", record.levelname, record.name, record.getMessage()]
        for key, value in record_fields(record).items():
            text = str(value)
            parts.append(f"{key}={json.dumps(text) if (' ' in text or not text) else text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            **{k: v if isinstance(v, int | float | bool) or v is None else str(v)
               for k, v in record_fields(record).items()},
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


class SecretScrubber(logging.Filter):
    """Replaces any known secret value in a formatted record: a last line of defence."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        scrubbed = message
        for secret in self._secrets:
            scrubbed = scrubbed.replace(secret, "***")
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


def setup_logging(level: str | int = "INFO", fmt: str = "text", secrets: list[str] | None = None,
                  stream: TextIO | None = None) -> None:
    """Install one handler (stdout unless `stream` says otherwise) on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tutor_handler", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler._tutor_handler = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(SecretScrubber(secrets or []))
    root.addHandler(handler)
    root.setLevel(level)
    # voice-recv logs every packet from an unknown SSRC at INFO; discord.py's gateway is chatty too.
    logging.getLogger("discord.ext.voice_recv.reader").setLevel(logging.WARNING)
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)

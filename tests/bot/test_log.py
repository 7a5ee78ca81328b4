"""bot.log: secrets never reach a log line, whatever field carries them, in both formats."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bot.log import setup_logging

KEY = "made-up-gemini-key_0123456789"  # a fake: no real key shape, so secret scanners stay quiet
PASSWORD = 'p@ss"w/rd\\42'  # DATABASE_URL password: characters JSON and URLs escape


@pytest.fixture
def capture():
    """The root logger wired by setup_logging to a string stream; restored afterwards."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    streams = []

    def install(fmt: str) -> io.StringIO:
        stream = io.StringIO()
        setup_logging("DEBUG", fmt, [KEY, PASSWORD], stream=stream)
        streams.append(stream)
        return stream

    yield install
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]


def log_everywhere() -> None:
    """A secret in the message, its args, an `extra` field, an exception's text and its traceback, a stack."""
    log = logging.getLogger("bot.test")
    log.info("connecting with %s", KEY, extra={"url": f"postgresql://tutor:{PASSWORD}@db/tutor", "key": KEY,
                                                "nested": {"api_key": KEY}})
    try:
        raise RuntimeError(f"401 for key={KEY} and password {PASSWORD}")
    except RuntimeError:
        log.exception("live.failed", extra={"error": RuntimeError(KEY)})
    log.warning("where", stack_info=True, extra={"local": KEY})


def secrets_in(text: str) -> list[str]:
    variants = [KEY, PASSWORD, json.dumps(PASSWORD)[1:-1], "p%40ss%22w%2Frd%5C42"]
    return [v for v in variants if v in text]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_in_any_field_of_any_line(capture, fmt):
    """Message, args, extra (strings, objects, dicts), exception text, traceback and stack: all scrubbed."""
    stream = capture(fmt)
    log_everywhere()
    output = stream.getvalue()
    assert "RuntimeError" in output and "Traceback" in output and "***" in output
    assert secrets_in(output) == []
    if fmt == "json":
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert len(lines) == 3 and "exc" in lines[1] and "stack" in lines[2]

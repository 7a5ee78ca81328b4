"""Fixtures for the Live tests: the fake Live server and Settings pointed at it."""

from __future__ import annotations

import pytest

from tests.fake_live import FakeLiveServer, make_client_settings


@pytest.fixture
async def server():
    """A fresh fake Gemini Live server (TLS on 127.0.0.1) with default behaviour."""
    async with FakeLiveServer() as fake:
        yield fake


@pytest.fixture
def settings(server, monkeypatch):
    """Settings whose GEMINI_BASE_URL and SSL_CERT_FILE point at `server`."""
    return make_client_settings(server, monkeypatch)

"""Fixtures for the Live tests: the fake Live server, Settings pointed at it, and running sessions."""

from __future__ import annotations

import asyncio

import pytest

from bot.live.session import LiveConnectOptions, LiveSession
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


FAST = LiveConnectOptions(max_retries=3, first_retry_delay=0.01, max_retry_delay=0.05, connect_timeout=5.0,
                          close_timeout=0.5)


class Collector:
    """Drains a session's events in the background so tests can wait for the ones they need."""

    def __init__(self, session: LiveSession) -> None:
        self.events: list = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(session))

    async def _run(self, session: LiveSession) -> None:
        async for event in session.events():
            self.events.append(event)
            self._changed.set()

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait(self, kind: type, count: int = 1, within: float = 10.0) -> list:
        async with asyncio.timeout(within):
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(kind)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def live(settings):
    sessions: list[tuple[LiveSession, Collector]] = []

    async def make(**kwargs) -> tuple[LiveSession, Collector]:
        kwargs.setdefault("connect_options", FAST)
        session = LiveSession(settings, system_instruction="Be a kind tutor.", **kwargs)
        await session.start()
        collector = Collector(session)
        sessions.append((session, collector))
        return session, collector

    yield make
    for session, collector in sessions:
        await session.close()
        await collector.stop()

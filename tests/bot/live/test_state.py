"""LiveSession's explicit lifecycle: the transition table, and the states seen against the fake Live server."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.live.events import Failed, LiveEvent, Reconnected, TurnComplete
from bot.live.options import ALLOWED_TRANSITIONS, IllegalTransition, LiveState, check_transition
from bot.live.session import LiveConnectFailed, LiveConnectOptions, LiveSession

FAST = LiveConnectOptions(max_retries=3, first_retry_delay=0.01, max_retry_delay=0.05, connect_timeout=5.0,
                          close_timeout=0.5)
S = LiveState


@pytest.fixture
def transitions(caplog):
    """Every `live.state` log line of one session, as (from, to) pairs."""
    caplog.set_level(logging.INFO, logger="bot.live.session")

    def of(session: LiveSession) -> list[tuple[LiveState, LiveState]]:
        return [(LiveState(r.from_state), LiveState(r.to_state)) for r in caplog.records
                if r.getMessage() == "live.state" and r.live_session == session.id]
    return of


class Events:
    """Drains a session's events in the background so a test can wait for one kind."""

    def __init__(self, session: LiveSession) -> None:
        self.seen: list[LiveEvent] = []
        self._task = asyncio.create_task(self._run(session))

    async def _run(self, session: LiveSession) -> None:
        async for event in session.events():
            self.seen.append(event)

    async def wait(self, kind: type, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not any(isinstance(e, kind) for e in self.seen):
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.mark.parametrize(("current", "new"), [
    (S.CLOSED, S.READY), (S.CLOSED, S.CONNECTING), (S.FAILED, S.READY), (S.FAILED, S.RECONNECTING),
    (S.IDLE, S.READY), (S.CONNECTING, S.HANDING_OVER), (S.RECONNECTING, S.HANDING_OVER), (S.READY, S.READY),
])
def test_table_rejects_illegal_moves(current, new):
    """A move the table lacks raises IllegalTransition naming both states."""
    with pytest.raises(IllegalTransition, match=f"{current.name} to {new.name}"):
        check_transition(current, new)


def test_table_covers_every_state_and_only_closed_is_final():
    """Every state has a row; every state but CLOSED can still be closed; CLOSED leads nowhere."""
    assert set(ALLOWED_TRANSITIONS) == set(LiveState)
    assert ALLOWED_TRANSITIONS[S.CLOSED] == frozenset()
    assert all(S.CLOSED in ALLOWED_TRANSITIONS[s] for s in LiveState if s is not S.CLOSED)
    check_transition(S.READY, S.HANDING_OVER)  # legal moves pass silently
    check_transition(S.FAILED, S.CLOSED)


async def test_start_then_close(settings, transitions):
    """IDLE → CONNECTING → READY → CLOSED; connected only while READY; state cannot be assigned."""
    session = LiveSession(settings, system_instruction="x", connect_options=FAST)
    assert session.state is S.IDLE and not session.stats.connected
    await session.start()
    assert session.state is S.READY and session.stats.connected
    with pytest.raises(AttributeError):
        session.state = S.CLOSED  # type: ignore[misc]
    await session.close()
    assert session.state is S.CLOSED and not session.stats.connected
    assert transitions(session) == [(S.IDLE, S.CONNECTING), (S.CONNECTING, S.READY), (S.READY, S.CLOSED)]


async def test_closed_before_start_cannot_start(settings, transitions):
    """A session closed before start() refuses to start instead of opening a socket nobody owns."""
    session = LiveSession(settings, system_instruction="x", connect_options=FAST)
    await session.close()
    with pytest.raises(RuntimeError, match="CLOSED"):
        await session.start()
    assert transitions(session) == [(S.IDLE, S.CLOSED)]


async def test_go_away_hands_over_and_returns_to_ready(server, settings, transitions):
    """GoAway → READY → HANDING_OVER → READY, without passing through RECONNECTING."""
    session = LiveSession(settings, system_instruction="x", connect_options=FAST)
    await session.start()
    events = Events(session)
    try:
        session.send_text("hi")
        await events.wait(TurnComplete)
        await server.wait_for(lambda: any(c.session and c.session.handles for c in server.connections))
        await server.go_away(time_left=1.0, close_after=0.3)
        await events.wait(Reconnected)
        assert session.state is S.READY and session.stats.connected
    finally:
        await session.close()
        await events.stop()
    assert transitions(session) == [(S.IDLE, S.CONNECTING), (S.CONNECTING, S.READY), (S.READY, S.HANDING_OVER),
                                    (S.HANDING_OVER, S.READY), (S.READY, S.CLOSED)]


async def test_1011_drop_reconnects_and_returns_to_ready(server, settings, transitions):
    """An unexpected 1011 → READY → RECONNECTING → READY."""
    session = LiveSession(settings, system_instruction="x", connect_options=FAST)
    await session.start()
    events = Events(session)
    try:
        await server.close(1011, "Internal error encountered.")
        await events.wait(Reconnected)
        assert session.state is S.READY
    finally:
        await session.close()
        await events.stop()
    assert transitions(session) == [(S.IDLE, S.CONNECTING), (S.CONNECTING, S.READY), (S.READY, S.RECONNECTING),
                                    (S.RECONNECTING, S.READY), (S.READY, S.CLOSED)]


async def test_bad_key_at_start_fails_then_closes(settings, transitions):
    """A rejected key: CONNECTING → FAILED (Failed emitted), then start() releases it: FAILED → CLOSED."""
    bad = settings.model_copy(update={"gemini_api_key": type(settings.gemini_api_key)("AIzaSy-wrong-key-000")})
    session = LiveSession(bad, system_instruction="x", connect_options=FAST)
    with pytest.raises(LiveConnectFailed):
        await session.start()
    assert isinstance([e async for e in session.events()][-1], Failed)
    assert session.state is S.CLOSED and not session.stats.connected
    assert transitions(session) == [(S.IDLE, S.CONNECTING), (S.CONNECTING, S.FAILED), (S.FAILED, S.CLOSED)]

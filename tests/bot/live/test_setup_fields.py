"""The setup the bot sends never carries a field gemini-3.8-live rejects (checked against the truthful fake)."""

from __future__ import annotations

import asyncio

import pytest
from google.genai import types

from bot.live import connection
from bot.live.buffers import HistoryTurn
from bot.live.session import LiveConnectFailed, LiveSession
from bot.live_setup import sample_tutor_setup
from tests.bot.live.conftest import FAST, Collector
from tests.fake_live_model import SETUP_RULES, rejected_setup


async def setups_the_bot_sends(server, settings) -> list[dict]:
    """Every kind of setup a conversation sends: fresh, seeded with history, and resuming with a handle."""
    instruction, extras = sample_tutor_setup()
    session = LiveSession(settings, system_instruction=instruction, extras=extras, connect_options=FAST,
                          history=[HistoryTurn("child", "I like Mars"), HistoryTurn("tutor", "Mars is red!")])
    await session.start()
    events = Collector(session)
    try:
        session.send_text("why is Mars red?")
        await server.wait_for(lambda: any(s.handles for s in server.sessions))
        await asyncio.sleep(0.05)
        await server.drop()
        await server.wait_for(lambda: len(server.connections) >= 2 and server.connections[-1].session is not None)
    finally:
        await session.close()
        await events.stop()
    fresh = LiveSession(settings, system_instruction=instruction, extras=extras, connect_options=FAST)
    await fresh.start()
    await fresh.close()
    return [c.setup for c in server.connections]


@pytest.mark.parametrize("rule", SETUP_RULES, ids=[r.field for r in SETUP_RULES])
async def test_no_setup_the_bot_sends_carries_a_rejected_field(server, settings, rule):
    """For each field 3.8 refuses: not in the seeded, the resumed or the plain setup of a conversation."""
    setups = await setups_the_bot_sends(server, settings)
    kinds = {("seeded" if "historyConfig" in s else "resumed" if s["sessionResumption"].get("handle") else "plain")
             for s in setups}
    assert kinds == {"seeded", "resumed", "plain"}
    assert not any(rule.present(setup) for setup in setups)
    assert all(rejected_setup(setup) is None for setup in setups)
    assert all(c.refusal is None for c in server.connections)


async def test_a_rejected_field_would_fail_the_start_with_the_services_reason(server, settings, monkeypatch):
    """The negative control: were the setup to carry thinking_config, start() fails at once, naming it."""
    real = connection.live_connect_config

    def with_thinking(*args, **kwargs) -> types.LiveConnectConfig:
        config = real(*args, **kwargs)
        return config.model_copy(update={"thinking_config": types.ThinkingConfig(thinking_budget=0)})

    monkeypatch.setattr(connection, "live_connect_config", with_thinking)
    session = LiveSession(settings, system_instruction="x", connect_options=FAST)
    with pytest.raises(LiveConnectFailed) as caught:
        await session.start()
    assert caught.value.failure.code == 1007 and "thinking_config is not supported" in str(caught.value)
    assert len(server.connections) == 1
    await session.close()

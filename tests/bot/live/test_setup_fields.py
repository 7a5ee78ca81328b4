"""The setup the bot sends never carries a field gemini-3.8-live rejects (checked against the truthful fake), and a
field it may refuse (unverified for the Gemini Developer API) cannot fail every session."""

from __future__ import annotations

import asyncio

import pytest
from google.genai import types

from bot.live import connection
from bot.live.buffers import HistoryTurn
from bot.live.events import Failed, Reconnected, TurnComplete
from bot.live.session import LiveConnectFailed, LiveSession
from bot.live_setup import sample_tutor_setup
from tests import fake_live_model
from tests.bot.live.conftest import FAST, Collector
from tests.fake_live_model import DOUBTFUL_RULES, SETUP_RULES, rejected_setup


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


@pytest.mark.parametrize("rule", DOUBTFUL_RULES, ids=[r.field for r in DOUBTFUL_RULES])
async def test_a_doubtful_field_the_service_refuses_costs_that_field_not_the_session(server, settings, monkeypatch,
                                                                                      rule):
    """If Gemini refuses the custom vocabulary or the language code (documented for Vertex's 3.8 only), the
    session starts without those two, says why, and every later connection leaves them out too."""
    monkeypatch.setattr(fake_live_model, "SETUP_RULES", (*SETUP_RULES, rule))
    instruction, extras = sample_tutor_setup()
    session = LiveSession(settings, system_instruction=instruction, extras=extras, connect_options=FAST)
    await session.start()
    events = Collector(session)
    try:
        refused, accepted = server.connections
        assert refused.refusal == (1007, rule.reason[:123]) and accepted.refusal is None
        assert rule.reason[:60] in session.setup_refusal and "custom_vocabulary and language_code" in \
            session.setup_refusal
        assert accepted.setup["tools"] == refused.setup["tools"]  # the tools and the rest stay
        assert "custom_vocabulary" not in accepted.setup["inputAudioTranscription"]
        assert "language_code" not in accepted.setup["generationConfig"]["speechConfig"]
        session.send_text("hi")
        await events.wait(TurnComplete)
        await server.wait_for(lambda: any(s.handles for s in server.sessions))
        await asyncio.sleep(0.05)
        await server.drop()
        await events.wait(Reconnected)
        assert len(server.connections) == 3 and server.connections[2].refusal is None  # resumed, still without
        assert not events.of(Failed)
    finally:
        await session.close()
        await events.stop()


async def test_a_bad_key_is_not_retried_without_the_doubtful_fields(server, settings):
    """A 1007 that names the key is the key: one connection, the key's sentence, no second try."""
    instruction, extras = sample_tutor_setup()
    bad = settings.model_copy(update={"gemini_api_key": type(settings.gemini_api_key)("not-the-key")})
    session = LiveSession(bad, system_instruction=instruction, extras=extras, connect_options=FAST)
    with pytest.raises(LiveConnectFailed) as caught:
        await session.start()
    assert "GEMINI_API_KEY" in str(caught.value) and len(server.connections) == 1
    await session.close()

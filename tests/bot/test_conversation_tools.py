"""The tutor's tools end to end: the real SDK against the fake Live server's tool calls (3.8's shape: the call
comes before the reply's audio, the child's words after it), the real player, real SQLite."""

from __future__ import annotations

import asyncio

import pytest

from bot.cost import Prices, split_by_modality
from bot.tools import ALERT_GROWN_UP, END_CONVERSATION
from tests.bot.test_tutor import GUILD, RecordingObserver, live_server, request, speech, wait_until, world

__all__ = ["live_server", "world"]  # fixtures shared with test_tutor

REASON = "The child said their home address out loud."


class AlertObserver(RecordingObserver):
    """Also records what the moderators' alerts channel would be given."""

    def __init__(self) -> None:
        super().__init__()
        self.alerts: list = []

    async def on_alert(self, conversation, event, turn):
        self.alerts.append((event, turn))


@pytest.fixture
def tools_world(world):
    conversations, connector, _, channel, kids = world
    observer = AlertObserver()
    conversations.add_observer(observer)
    return conversations, connector, observer, channel, kids


async def test_the_setup_declares_both_tools_non_blocking(tools_world, live_server):
    """alert_grown_up and end_conversation go out in the setup, NON_BLOCKING, and the instruction explains them."""
    conversations, _, _, channel, _ = tools_world
    await conversations.start(request(channel))
    setup = live_server.connections[0].setup
    declared = {d["name"]: d for tool in setup["tools"] for d in tool["functionDeclarations"]}
    assert set(declared) == {ALERT_GROWN_UP, END_CONVERSATION}
    assert {d["behavior"] for d in declared.values()} == {"NON_BLOCKING"}
    assert "alert_grown_up" in setup["systemInstruction"]["parts"][0]["text"]
    await conversations.stop(GUILD)


async def test_alert_grown_up_tells_the_moderators_and_the_tutor_keeps_talking(tools_world, live_server, repository):
    """The call is answered SILENT with an informative result (no extra reply), stored with the child's turn that
    prompted it (whose words came after the call), that turn is flagged, and the moderators get the alert."""
    conversations, connector, observer, channel, kids = tools_world
    live_server.call_tool_next(ALERT_GROWN_UP, {"reason": REASON, "category": "personal_details"})
    conversation = await conversations.start(request(channel))
    await connector.last.say(kids[0], speech())
    await wait_until(lambda: observer.alerts, within=15)
    await live_server.wait_for(lambda: live_server.replies_sent >= 1)

    (response,) = live_server.tool_responses
    assert response["id"] == live_server.tool_calls[0]["id"] and response["scheduling"] == "SILENT"
    assert response["response"]["status"] == "ok" and response["response"]["retryable"] is False
    event, turn = observer.alerts[0]
    assert (event.category, event.reason, event.outcome) == ("personal_details", REASON, "moderators alerted")
    assert turn is not None and turn.role == "child" and turn.text == live_server.child_text
    assert turn.speaker_name == "Ana" and turn.flag_reason == "alert: personal_details"
    await asyncio.sleep(0.3)
    assert live_server.replies_sent == 1  # SILENT: the result started no second reply
    assert len(live_server.tool_calls) == 1  # informative: 3.8 makes a call again after an empty result
    await conversations.stop(GUILD)

    (stored,) = await repository.session_events(GUILD, conversation.session_id)
    child, tutor = await repository.get_turns(GUILD, conversation.session_id)
    assert stored.turn_id == child.id and stored.name == ALERT_GROWN_UP
    assert tutor.text == live_server.reply_text and not tutor.flag_reason  # the tutor kept talking kindly


async def test_a_childs_words_behind_an_alert_are_never_seeded_into_a_fresh_connection(tools_world, live_server):
    """The alert flags the child's turn; when the connection later drops with no handle, the new one is seeded
    with the talk so far but not those words (a home address is not replayed to the model)."""
    conversations, connector, observer, channel, kids = tools_world
    live_server.resumption_updates = False  # no handle: the next connection starts fresh and is re-seeded
    live_server.call_tool_next(ALERT_GROWN_UP, {"reason": REASON, "category": "personal_details"})
    await conversations.start(request(channel))
    await connector.last.say(kids[0], speech())
    await wait_until(lambda: observer.alerts, within=15)
    await live_server.drop()
    await live_server.wait_for(lambda: len(live_server.connections) >= 2 and live_server.connections[1].session
                               and live_server.connections[1].session.history, within=15)
    seeded = [(t["role"], t["parts"][0]["text"]) for t in live_server.connections[1].session.history]
    assert ("model", live_server.reply_text) in seeded and ("user", live_server.child_text) not in seeded
    await conversations.stop(GUILD)


async def test_end_conversation_ends_the_call_after_the_goodbye_played(tools_world, live_server, repository):
    """When the kids say bye the tutor's goodbye plays to the end, then the conversation ends by itself."""
    conversations, connector, observer, channel, kids = tools_world
    live_server.reply_audio_ms = 1000  # the goodbye: 50 frames of 20 ms
    live_server.call_tool_next(END_CONVERSATION, {"reason": "the children said goodbye"})
    conversation = await conversations.start(request(channel))
    voice = connector.last
    await voice.say(kids[0], speech())
    result = await asyncio.wait_for(conversation.wait_ended(), 20)

    assert result.reason == "the tutor ended the call: the children said goodbye" and observer.ended == [result]
    assert len(voice.sent) >= 45  # the goodbye's frames reached Discord before the bot left
    (event,) = await repository.session_events(GUILD, conversation.session_id)
    child, tutor = await repository.get_turns(GUILD, conversation.session_id)
    assert (event.name, event.turn_id, event.outcome) == (END_CONVERSATION, child.id, "call ended after the goodbye")
    assert tutor.text == live_server.reply_text and not tutor.interrupted
    assert (await repository.get_session(GUILD, conversation.session_id)).end_reason == result.reason


async def test_a_cancelled_end_conversation_is_called_off(tools_world, live_server, repository):
    """A child speaking again makes 3.8 cancel the call: the conversation goes on, and the record says so."""
    conversations, connector, _, channel, kids = tools_world
    live_server.reply_audio_ms = 2000
    live_server.call_tool_next(END_CONVERSATION, {"reason": "bye"})
    conversation = await conversations.start(request(channel))
    await connector.last.say(kids[0], speech())
    await live_server.wait_for(lambda: live_server.tool_responses)
    call_id = live_server.tool_calls[0]["id"]
    await live_server.send_raw({"toolCallCancellation": {"ids": [call_id]}})
    await live_server.wait_for(lambda: live_server.replies_sent >= 1, within=15)
    await asyncio.sleep(2.5)  # past the goodbye's playback: an end not called off would have stopped by now
    assert conversations.get(GUILD) is conversation
    await conversations.stop(GUILD)
    (event,) = await repository.session_events(GUILD, conversation.session_id)
    assert event.call_id == call_id and event.outcome.startswith("called off")


async def test_the_bill_is_the_sum_of_the_fakes_growing_snapshots(tools_world, live_server, repository):
    """Two turns: each snapshot (TEXT/AUDIO details, thoughts, the context re-billed) is priced by modality and
    the session's cost is exactly their sum; the second turn's prompt is larger than the first's."""
    conversations, connector, _, channel, kids = tools_world
    conversation = await conversations.start(request(channel))
    for expected in (1, 2):
        await connector.last.say(kids[0], speech())
        await live_server.wait_for(lambda: len(live_server.usage_reports) >= expected, within=15)  # noqa: B023
    await wait_until(lambda: conversation.status().session_tokens >= sum(
        u["totalTokenCount"] for u in live_server.usage_reports))
    await conversations.stop(GUILD)

    reports = live_server.usage_reports
    assert reports[1]["promptTokenCount"] > reports[0]["promptTokenCount"]  # the whole context, every turn
    expected = [split_by_modality(
        prompt=u["promptTokenCount"], response=u["responseTokenCount"], thoughts=u.get("thoughtsTokenCount"),
        prompt_details=[(d["modality"], d["tokenCount"]) for d in u.get("promptTokensDetails", [])],
        response_details=[(d["modality"], d["tokenCount"]) for d in u.get("responseTokensDetails", [])])
        for u in reports]
    stored = await repository.session_usage(GUILD, conversation.session_id)
    assert stored.snapshots == len(reports)
    assert stored.tokens.text_in > 0 and stored.tokens.audio_in > 0 and stored.tokens.thoughts > 0
    assert stored.cost_usd == pytest.approx(sum(t.cost(Prices()) for t in expected))
    assert stored.total_tokens == sum(u["totalTokenCount"] for u in reports)

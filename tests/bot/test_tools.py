"""bot.tools: the declarations the setup carries and how each call is decided (informative, SILENT results)."""

from dataclasses import dataclass, field

from google.genai import types

from bot.tools import ALERT_CATEGORIES, ALERT_GROWN_UP, END_CONVERSATION, ToolDesk, declarations


@dataclass(frozen=True)
class Call:
    id: str
    name: str
    args: dict = field(default_factory=dict)


def test_both_tools_are_declared_non_blocking():
    """alert_grown_up(reason, category) and end_conversation(reason), NON_BLOCKING, categories as an enum."""
    (tool,) = declarations()
    by_name = {d.name: d for d in tool.function_declarations}
    assert set(by_name) == {ALERT_GROWN_UP, END_CONVERSATION}
    assert all(d.behavior == types.Behavior.NON_BLOCKING for d in by_name.values())
    alert = by_name[ALERT_GROWN_UP].parameters
    assert alert.required == ["reason", "category"] and alert.properties["category"].enum == list(ALERT_CATEGORIES)
    assert by_name[END_CONVERSATION].parameters.required == ["reason"]


def test_an_alert_is_acted_on_and_answered_silently():
    """The first alert asks the conversation to alert; the result is SILENT and says what happened."""
    decision = ToolDesk().decide(Call("c1", ALERT_GROWN_UP, {"reason": "Said their address.",
                                                             "category": "personal_details"}))
    assert decision.action == "alert"
    assert decision.record.category == "personal_details" and decision.record.reason == "Said their address."
    response = decision.response
    assert response.id == "c1" and response.name == ALERT_GROWN_UP
    assert response.scheduling == types.FunctionResponseScheduling.SILENT
    assert response.response["status"] == "ok" and response.response["alerted"] is True
    assert response.response["retryable"] is False and response.response["message"]


def test_a_repeated_alert_is_answered_but_not_acted_on_twice():
    """3.8 re-issues calls: the same category again in the same child turn is 'already done', not a second post."""
    desk = ToolDesk()
    desk.decide(Call("c1", ALERT_GROWN_UP, {"reason": "hurt", "category": "hurt"}))
    again = desk.decide(Call("c2", ALERT_GROWN_UP, {"reason": "hurt", "category": "hurt"}))
    assert again.action is None and again.response.response["already_done"] is True
    assert again.record.outcome.startswith("repeat")
    other = desk.decide(Call("c3", ALERT_GROWN_UP, {"reason": "scared", "category": "scared"}))
    assert other.action == "alert"
    desk.child_spoke()
    assert desk.decide(Call("c4", ALERT_GROWN_UP, {"reason": "hurt again", "category": "hurt"})).action == "alert"


def test_an_alert_with_a_bad_category_still_alerts():
    """A child who may need help is never dropped over a malformed argument."""
    decision = ToolDesk().decide(Call("c1", ALERT_GROWN_UP, {"category": "weird", "reason": 42}))
    assert decision.action == "alert" and decision.record.category == "grown_up_topic"
    assert ToolDesk().decide(Call("c2", ALERT_GROWN_UP, {})).record.reason == "(no reason given)"


def test_end_conversation_ends_once_and_can_be_withdrawn():
    """The first end asks to end after the goodbye; a repeat is 'already ending'; a cancellation calls it off."""
    desk = ToolDesk()
    first = desk.decide(Call("e1", END_CONVERSATION, {"reason": "the kids said bye"}))
    assert first.action == "end" and first.record.reason == "the kids said bye"
    assert first.response.scheduling == types.FunctionResponseScheduling.SILENT
    assert desk.decide(Call("e2", END_CONVERSATION, {})).action is None
    assert not desk.cancelled("other") and desk.cancelled("e1")
    assert desk.decide(Call("e3", END_CONVERSATION, {})).action == "end"


def test_an_unknown_tool_gets_an_informative_error():
    """A call to a tool we do not have is answered with what exists, not with silence."""
    decision = ToolDesk().decide(Call("x1", "search_web", {"query": "x"}))
    assert decision.action is None and decision.response.response["status"] == "error"
    assert ALERT_GROWN_UP in decision.response.response["error"] and decision.response.response["retryable"] is False
    assert decision.record.outcome == "refused: no such tool"


class Recorder:
    """What ToolCalls hands to the conversation."""

    def __init__(self) -> None:
        self.responses, self.records, self.outcomes, self.ended, self.called_off = [], [], [], [], 0

    def calls(self):
        from bot.tools import ToolCalls

        def call_off():
            self.called_off += 1

        return ToolCalls(respond=self.responses.append, record=lambda r, alert: self.records.append((r, alert)),
                         outcome=lambda call_id, text: self.outcomes.append((call_id, text)),
                         end=self.ended.append, call_off_end=call_off)


def test_calls_are_answered_together_recorded_and_acted_on():
    """One ToolCall with two calls: one message with both results, both recorded, the alert marked, the end run."""
    seen = Recorder()
    tools = seen.calls()
    tools.on_calls([Call("a1", ALERT_GROWN_UP, {"reason": "sad", "category": "scared"}),
                    Call("e1", END_CONVERSATION, {"reason": "bye"})])
    (responses,) = seen.responses
    assert [r.id for r in responses] == ["a1", "e1"]
    assert [(r.name, alert) for r, alert in seen.records] == [(ALERT_GROWN_UP, True), (END_CONVERSATION, False)]
    assert seen.ended == ["bye"]


def test_cancelling_an_end_calls_it_off_and_an_alert_stands():
    """A withdrawn end stops the ending; a withdrawn alert keeps the alert and says so; unknown ids are ignored."""
    seen = Recorder()
    tools = seen.calls()
    tools.on_calls([Call("a1", ALERT_GROWN_UP, {"reason": "hurt", "category": "hurt"})])
    tools.on_calls([Call("e1", END_CONVERSATION, {"reason": "bye"})])
    tools.on_cancelled(["e1", "a1", "nope"])
    assert seen.called_off == 1
    assert [call_id for call_id, _ in seen.outcomes] == ["e1", "a1"]
    assert "called off" in seen.outcomes[0][1] and "the alert stands" in seen.outcomes[1][1]

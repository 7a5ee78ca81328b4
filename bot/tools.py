"""What the tutor can do besides talking: tell a grown-up, and end the call. Declarations and their handling.

Both are NON_BLOCKING function calls (3.8's default, declared anyway): the tutor keeps talking while the
bot acts. Each result is sent with SILENT scheduling — it goes into the model's context without starting
a new reply, so the kids never hear "the alert was sent" — and says plainly what happened and whether to
try again: 3.8 re-issues a call two to five times when a tool answers with nothing useful
(`gemini_live_38.md` §A), and a repeat is answered "already done" without acting twice.

`ToolDesk.decide(call)` is pure: it checks the arguments and returns a `ToolDecision` (the response for the
model, the record for the transcript, and what the conversation should do). `ToolCalls` carries the
decisions out through what `bot.conversation` hands it (send, record, end).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from google.genai import types

log = logging.getLogger(__name__)

ALERT_GROWN_UP = "alert_grown_up"
END_CONVERSATION = "end_conversation"
REASON_LIMIT = 300

# Why the tutor may ask for a grown-up, with what moderators read for each.
ALERT_CATEGORIES: dict[str, str] = {
    "personal_details": "a child shared personal details (a home address, phone number, school, password or "
                        "full name)",
    "hurt": "a child says they are hurt, or that someone hurt them",
    "scared": "a child is scared, very sad or upset",
    "bullied": "a child is being bullied or picked on",
    "unsafe": "a child may be unsafe (asked to keep a secret, to meet someone, or to do something dangerous)",
    "grown_up_topic": "a child asked about something a grown-up should handle",
}

Action = Literal["alert", "end"]


class FunctionCallLike(Protocol):
    """A function call as `bot.live.events` reports it."""

    id: str
    name: str
    args: Mapping[str, Any]


def declarations() -> list[types.Tool]:
    """The tools declared in every Live setup."""
    return [types.Tool(function_declarations=[
        types.FunctionDeclaration(
            name=ALERT_GROWN_UP, behavior=types.Behavior.NON_BLOCKING,
            description=("Quietly tell the grown-ups who look after this server that a child may need them. Call "
                         "it when a child shares personal details, says they are hurt, scared, bullied or unsafe, "
                         "or asks about something a grown-up should handle. Keep talking kindly while it runs; "
                         "do not tell the children about the alert."),
            parameters=types.Schema(type=types.Type.OBJECT, required=["reason", "category"], properties={
                "reason": types.Schema(type=types.Type.STRING, description=(
                    "One short, factual sentence for the grown-ups: what the child said or asked.")),
                "category": types.Schema(type=types.Type.STRING, enum=list(ALERT_CATEGORIES),
                                         description="What kind of help: " + "; ".join(
                                             f"{name} = {text}" for name, text in ALERT_CATEGORIES.items())),
            })),
        types.FunctionDeclaration(
            name=END_CONVERSATION, behavior=types.Behavior.NON_BLOCKING,
            description=("End the voice call. Call it when the children say goodbye or ask to stop, after you "
                         "have said a short, warm goodbye. The call ends once your goodbye has played."),
            parameters=types.Schema(type=types.Type.OBJECT, required=["reason"], properties={
                "reason": types.Schema(type=types.Type.STRING, description=(
                    "Why the call ends, in a few words (for example: the children said goodbye)."))})),
    ])]


@dataclass(frozen=True, slots=True)
class ToolRecord:
    """A tool call as the transcript keeps it: what was asked, why, and what the bot did."""

    name: str
    call_id: str
    reason: str
    outcome: str
    category: str | None = None


@dataclass(frozen=True, slots=True)
class ToolDecision:
    """What one call leads to: the model's answer, the transcript's record, and the conversation's action."""

    response: types.FunctionResponse
    record: ToolRecord
    action: Action | None = None


def _response(call: FunctionCallLike, **payload: Any) -> types.FunctionResponse:
    return types.FunctionResponse(id=call.id, name=call.name, response=payload,
                                  scheduling=types.FunctionResponseScheduling.SILENT)


def _text(value: object) -> str:
    return " ".join(str(value).split())[:REASON_LIMIT] if isinstance(value, str | int | float) else ""


class ToolDesk:
    """Decides each call of one conversation; remembers what it already did so repeats are not acted on twice."""

    def __init__(self) -> None:
        self._alerted: set[str] = set()  # categories alerted since the last child turn
        self._ending_call: str | None = None

    def child_spoke(self) -> None:
        """A new child turn was stored: a new alert in a category already used is news again."""
        self._alerted.clear()

    def decide(self, call: FunctionCallLike) -> ToolDecision:
        """The response, record and action for one call (never raises: a bad call gets an error result)."""
        if call.name == ALERT_GROWN_UP:
            return self._alert(call)
        if call.name == END_CONVERSATION:
            return self._end(call)
        known = ", ".join((ALERT_GROWN_UP, END_CONVERSATION))
        return ToolDecision(
            _response(call, status="error", retryable=False,
                      error=f"There is no tool called {_text(call.name) or 'that'}; the tools are {known}."),
            ToolRecord(_text(call.name) or "(no name)", call.id, _text(call.args.get("reason", "")),
                       "refused: no such tool"))

    def cancelled(self, call_id: str) -> bool:
        """The model withdrew a call; True when it was the pending end, which is then called off."""
        if call_id and call_id == self._ending_call:
            self._ending_call = None
            return True
        return False

    def _alert(self, call: FunctionCallLike) -> ToolDecision:
        reason = _text(call.args.get("reason"))
        category = _text(call.args.get("category"))
        if category not in ALERT_CATEGORIES:  # still a child who may need a grown-up: alert anyway
            category = "grown_up_topic"
        if category in self._alerted:
            return ToolDecision(
                _response(call, status="ok", already_done=True, retryable=False,
                          message="The grown-ups were already told about this. Do not call again for it; "
                                  "keep talking kindly with the children."),
                ToolRecord(ALERT_GROWN_UP, call.id, reason, "repeat: already alerted", category))
        self._alerted.add(category)
        return ToolDecision(
            _response(call, status="ok", alerted=True, retryable=False,
                      message="The grown-ups who look after this server have been told. Do not mention it; keep "
                              "talking kindly, and if the child is upset suggest talking to a grown-up they trust."),
            ToolRecord(ALERT_GROWN_UP, call.id, reason or "(no reason given)", "moderators alerted", category),
            action="alert")

    def _end(self, call: FunctionCallLike) -> ToolDecision:
        reason = _text(call.args.get("reason")) or "the children said goodbye"
        if self._ending_call is not None:
            return ToolDecision(
                _response(call, status="ok", already_done=True, retryable=False,
                          message="The call is already ending after your goodbye. Do not call again."),
                ToolRecord(END_CONVERSATION, call.id, reason, "repeat: already ending"))
        self._ending_call = call.id
        return ToolDecision(
            _response(call, status="ok", ending=True, retryable=False,
                      message="The call ends as soon as your goodbye has finished playing. Say nothing more."),
            ToolRecord(END_CONVERSATION, call.id, reason, "call ended after the goodbye"), action="end")


class ToolCalls:
    """One conversation's tool calls: each decided, answered, recorded with its turn, and acted on.

    The conversation gives it what to do: `respond` sends results to Live, `record`/`outcome` go to the turn
    log (an alert is recorded with `alert=True`, which tells the moderators), `end` ends the call after the
    goodbye, and `call_off_end` cancels that when the model withdraws its `end_conversation`.
    """

    def __init__(self, *, respond: Callable[[list[types.FunctionResponse]], None],
                 record: Callable[[ToolRecord, bool], None], outcome: Callable[[str, str], None],
                 end: Callable[[str], None], call_off_end: Callable[[], None]) -> None:
        self._desk = ToolDesk()
        self._respond, self._record, self._outcome = respond, record, outcome
        self._end, self._call_off_end = end, call_off_end
        self._names: dict[str, str] = {}  # call id → function name, for cancellations

    def child_spoke(self) -> None:
        """A child turn was stored: alerts in a category already used count again."""
        self._desk.child_spoke()

    def on_calls(self, calls: Sequence[FunctionCallLike]) -> None:
        """A `ToolCall`: decide each call, answer them all in one message, then act."""
        decisions = [self._desk.decide(call) for call in calls]
        self._respond([d.response for d in decisions])
        for call, decision in zip(calls, decisions, strict=True):
            self._names[call.id] = call.name
            self._record(decision.record, decision.action == "alert")
            log.info("tools.call", extra={"tool": decision.record.name, "call_id": call.id,
                                          "category": decision.record.category, "outcome": decision.record.outcome})
            if decision.action == "end":
                self._end(decision.record.reason)

    def on_cancelled(self, ids: Sequence[str]) -> None:
        """A `ToolCallCancelled`: an end is called off; an alert already sent stands (a grown-up still looks)."""
        for call_id in ids:
            name = self._names.get(call_id)
            if name is None:
                continue
            if self._desk.cancelled(call_id):
                self._call_off_end()
                self._outcome(call_id, "called off: the model cancelled it when a child spoke again")
            elif name == ALERT_GROWN_UP:
                self._outcome(call_id, "moderators alerted; the model later cancelled the call (a child spoke), "
                                       "the alert stands")
            log.info("tools.cancelled", extra={"tool": name, "call_id": call_id})

"""The turn writer: in order, retried, never blocked by one bad turn, flags reported."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import bot.turns
from bot.turns import PendingTurn, TurnWriter

GUILD = 77
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def turn(i: int, **overrides) -> PendingTurn:
    values = {"role": "child" if i % 2 == 0 else "tutor", "text": f"turn {i}",
              "started_at": T0 + timedelta(seconds=i), "ended_at": T0 + timedelta(seconds=i + 1)}
    values.update(overrides)
    return PendingTurn(**values)


async def new_session(repository) -> int:
    return await repository.start_session(GUILD, 1, 2, "Ana", "space", 8, started_at=T0)


async def test_turns_are_stored_in_order_and_counted(repository):
    """Queued turns land in the order they completed."""
    session_id = await new_session(repository)
    flagged = []
    writer = TurnWriter(repository, GUILD, session_id, on_flagged=lambda row: _append(flagged, row))
    writer.start()
    for i in range(6):
        writer.put(turn(i))
    await writer.close(5)
    assert [t.text for t in await repository.get_turns(GUILD, session_id)] == [f"turn {i}" for i in range(6)]
    assert writer.stored == 6 and flagged == []


async def test_refused_writes_are_retried_not_dropped(repository, monkeypatch):
    """An OperationalError is retried with backoff until the turn is stored; order is kept."""
    monkeypatch.setattr(bot.turns, "FIRST_RETRY_S", 0.01)
    session_id = await new_session(repository)
    real = repository.add_turn
    failures = {"left": 3}

    async def flaky(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database is locked")
        return await real(*args, **kwargs)

    monkeypatch.setattr(repository, "add_turn", flaky)
    writer = TurnWriter(repository, GUILD, session_id, on_flagged=_ignore)
    writer.start()
    writer.put(turn(0))
    writer.put(turn(1))
    await writer.close(5)
    assert [t.text for t in await repository.get_turns(GUILD, session_id)] == ["turn 0", "turn 1"]


async def test_an_invalid_turn_does_not_block_the_next(repository):
    """A turn the repository rejects as invalid is logged and skipped; later turns are stored."""
    session_id = await new_session(repository)
    writer = TurnWriter(repository, GUILD, session_id, on_flagged=_ignore)
    writer.start()
    writer.put(turn(0, role="narrator"))
    writer.put(turn(1))
    await writer.close(5)
    assert [t.text for t in await repository.get_turns(GUILD, session_id)] == ["turn 1"]


async def test_flagged_turn_is_reported_with_its_row(repository):
    """A turn with a flag reason reaches the observer callback as the stored row."""
    session_id = await new_session(repository)
    flagged = []
    writer = TurnWriter(repository, GUILD, session_id, on_flagged=lambda row: _append(flagged, row))
    writer.start()
    writer.put(turn(1, flag_reason="GENERATED_CONTENT_SAFETY"))
    await writer.close(5)
    assert writer.flagged == 1 and flagged[0].flag_reason == "GENERATED_CONTENT_SAFETY"
    assert flagged[0].session_id == session_id and flagged[0].guild_id == GUILD


async def test_deleted_session_is_not_fatal(repository):
    """If moderators delete the running session, the writer logs it and keeps going."""
    session_id = await new_session(repository)
    await repository.delete_session(GUILD, session_id)
    writer = TurnWriter(repository, GUILD, session_id, on_flagged=_ignore)
    writer.start()
    writer.put(turn(0))
    await writer.close(5)
    assert writer.stored == 0


async def _append(items: list, row) -> None:
    items.append(row)


async def _ignore(row) -> None:
    return None


async def test_usage_and_events_are_stored_with_their_turns(repository):
    """Through the one queue: usage points at the turn before it, an event at the last child turn, in order."""
    from bot.cost import TokenCounts
    from bot.turns import PendingEvent, PendingOutcome, PendingUsage

    session_id = await new_session(repository)
    alerts = []
    writer = TurnWriter(repository, GUILD, session_id, on_flagged=_ignore,
                        on_alert=lambda event, turn: _append(alerts, (event, turn)))
    writer.start()
    writer.put(turn(0, text="my address is 12 Elm Street"))
    writer.put(PendingEvent("tool_call", "alert_grown_up", T0, call_id="c1", category="personal_details",
                            reason="shared an address", outcome="moderators alerted", belongs_to="prompt", alert=True))
    writer.put(turn(1, text="Let's keep that private."))
    writer.put(PendingUsage(TokenCounts(audio_in=80, audio_out=40), 120, 0.00072, T0))
    writer.put(PendingOutcome("c1", "moderators alerted; the model cancelled it"))
    await writer.close(5)

    child, tutor = await repository.get_turns(GUILD, session_id)
    (event,) = await repository.session_events(GUILD, session_id)
    assert event.turn_id == child.id and event.outcome == "moderators alerted; the model cancelled it"
    assert child.flag_reason == "alert: personal_details" and tutor.flag_reason is None
    assert alerts and alerts[0][0].category == "personal_details" and alerts[0][1].id == child.id
    rows = await repository._db.fetch_all("SELECT turn_id, cost_usd FROM turn_usage WHERE guild_id = ?", (GUILD,))
    assert [(r["turn_id"], r["cost_usd"]) for r in rows] == [(tutor.id, 0.00072)]
    assert writer.stored == 2 and writer.flagged == 1  # the alert flagged the child's words


async def test_a_call_before_its_prompt_waits_for_the_childs_turn(repository):
    """3.8 may call a tool before the child's words are transcribed: the call is stored with the next child turn."""
    from bot.turns import PendingEvent, PendingOutcome

    session_id = await new_session(repository)
    alerts = []
    writer = TurnWriter(repository, GUILD, session_id, on_flagged=_ignore,
                        on_alert=lambda event, turn: _append(alerts, (event, turn)))
    writer.start()
    writer.put(turn(0, text="hi"))
    writer.put(turn(1, text="Hello! What shall we talk about?"))
    writer.put(PendingEvent("tool_call", "alert_grown_up", T0, call_id="c9", category="hurt", reason="hurt",
                            belongs_to="prompt", alert=True))
    writer.put(PendingOutcome("c9", "moderators alerted; cancelled by the model"))
    writer.put(turn(2, text="someone hurt me"))
    await writer.close(5)
    turns = await repository.get_turns(GUILD, session_id)
    (event,) = await repository.session_events(GUILD, session_id)
    assert event.turn_id == turns[2].id and event.outcome.endswith("cancelled by the model")
    assert alerts[0][1].text == "someone hurt me" and turns[2].flag_reason == "alert: hurt"


async def test_a_call_whose_prompt_never_comes_is_stored_anyway(repository, monkeypatch):
    """No child turn after the call: it is stored (and alerted) without a turn, after the hold, or at close."""
    from bot.turns import PendingEvent

    monkeypatch.setattr(bot.turns, "HOLD_FOR_PROMPT_S", 0.05)
    session_id = await new_session(repository)
    alerts = []
    writer = TurnWriter(repository, GUILD, session_id, on_flagged=_ignore,
                        on_alert=lambda event, turn: _append(alerts, (event, turn)))
    writer.start()
    writer.put(PendingEvent("tool_call", "alert_grown_up", T0, call_id="c1", category="scared", belongs_to="prompt",
                            alert=True))
    for _ in range(100):
        if alerts:
            break
        await asyncio.sleep(0.02)
    assert alerts and alerts[0][1] is None
    monkeypatch.setattr(bot.turns, "HOLD_FOR_PROMPT_S", 60)
    writer.put(PendingEvent("tool_call", "end_conversation", T0, call_id="c2", belongs_to="prompt"))
    await writer.close(5)
    assert [(e.call_id, e.turn_id) for e in await repository.session_events(GUILD, session_id)] == [
        ("c1", None), ("c2", None)]


async def test_a_held_call_waits_at_most_the_hold_even_while_other_items_keep_coming(repository, monkeypatch):
    """The hold counts from the call, not from the newest item: usage snapshots and tutor turns arriving every
    moment must not keep an alert from the moderators (and ready for the wrong child turn) for as long as they come."""
    from bot.cost import TokenCounts
    from bot.turns import PendingEvent, PendingUsage

    monkeypatch.setattr(bot.turns, "HOLD_FOR_PROMPT_S", 0.3)
    session_id = await new_session(repository)
    alerts = []
    writer = TurnWriter(repository, GUILD, session_id, on_flagged=_ignore,
                        on_alert=lambda event, turn: _append(alerts, (event, turn)))
    writer.start()
    writer.put(turn(1, text="Hello!"))
    writer.put(PendingEvent("tool_call", "alert_grown_up", T0, call_id="c1", category="scared", belongs_to="prompt",
                            alert=True))
    for _ in range(12):  # 1.2 s of other items, one every 0.1 s
        writer.put(PendingUsage(TokenCounts(audio_in=10), 10, 0.0001, T0))
        await asyncio.sleep(0.1)
    alerted_while_busy = bool(alerts)
    await writer.close(5)
    assert alerted_while_busy and alerts[0][1] is None


async def test_a_turn_with_broken_unicode_is_repaired_and_kept(repository):
    """Live's transcript can carry a lone surrogate (half an emoji) or a NUL: the turn is stored with U+FFFD
    in their place, never dropped, and the turns after it still land."""
    session_id = await new_session(repository)
    writer = TurnWriter(repository, GUILD, session_id, on_flagged=lambda row: _append([], row))
    writer.start()
    writer.put(turn(0, text="I like \ud83d rockets\x00!", speaker_name="Zo\udce9"))
    writer.put(turn(1, text="Rockets are \ud83d\ude80 fun"))  # a valid pair split in two code points: joined
    await writer.close(5)
    first, second = await repository.get_turns(GUILD, session_id)
    assert first.text == "I like \ufffd rockets\ufffd!" and first.speaker_name == "Zo\ufffd"
    assert second.text == "Rockets are 🚀 fun" and writer.stored == 2


async def test_an_alert_with_broken_unicode_still_reaches_the_moderators(repository):
    """The model's reason for alert_grown_up can hold half an emoji like a transcript can: the call is stored
    repaired, the child's words are flagged and the moderators are told (it was dropped as an invalid row)."""
    from bot.turns import PendingEvent

    session_id = await new_session(repository)
    alerts = []
    writer = TurnWriter(repository, GUILD, session_id, on_flagged=_ignore,
                        on_alert=lambda event, turn: _append(alerts, (event, turn)))
    writer.start()
    writer.put(turn(0, text="someone at school hurts me"))
    writer.put(PendingEvent("tool_call", "alert_grown_up", T0, call_id="c1", category="hurt",
                            reason="A child says they are hurt \ud83d", belongs_to="prompt", alert=True))
    await writer.close(5)
    [(event, child)] = alerts
    assert event.reason == "A child says they are hurt \ufffd" and child.flag_reason == "alert: hurt"


async def test_a_blocked_reply_flags_the_kid_turns_that_prompted_it(repository):
    """When a reply is blocked, the child turns already written that prompted it are flagged and reported: the
    one said before it, and one typed while the previous reply was still playing. A prompt the previous reply
    already answered, and that reply's own prompt closed late, stay clean."""
    from bot.turns import PendingPromptFlag

    session_id = await new_session(repository)
    flagged = []
    writer = TurnWriter(repository, GUILD, session_id, on_flagged=lambda row: _append(flagged, row))
    writer.start()

    def said(role: str, text: str, second: float, **extra) -> PendingTurn:
        began = T0 + timedelta(seconds=second)
        return PendingTurn(role, text, began, began + timedelta(seconds=0.5), **extra)

    writer.put(said("child", "what is Mars", 0))
    writer.put(said("child", "typed while it played", 3, typed=True))  # typed turns are written at once
    writer.put(said("tutor", "A red planet, and very cold.", 2))  # written when that reply ends
    writer.put(said("child", "late words of the last prompt", 1.9))  # the assembler closed them late
    writer.put(said("child", "something unsafe", 6))
    writer.put(PendingPromptFlag("GENERATED_CONTENT_SAFETY"))
    writer.put(said("tutor", "", 7, flag_reason="GENERATED_CONTENT_SAFETY"))
    await writer.close(5)
    rows = {t.text: t for t in await repository.get_turns(GUILD, session_id)}
    assert {text for text, row in rows.items() if row.flagged} == {"typed while it played", "something unsafe", ""}
    assert rows["something unsafe"].flag_reason == "GENERATED_CONTENT_SAFETY"
    assert [row.text for row in flagged] == ["typed while it played", "something unsafe", ""]

"""The watchdog's stop rules, with plain numbers."""

from bot.limits import EMPTY_CHANNEL_GRACE_S, VOICE_LOST_GRACE_S, LimitRules, WatchdogReading


def reading(**overrides) -> WatchdogReading:
    values = {"now": 100.0, "started_at": 0.0, "voice_connected": True, "in_original_channel": True,
              "humans_in_channel": 2, "max_session_minutes": 30, "minutes_used_today": 1.0, "daily_minutes": 60}
    values.update(overrides)
    return WatchdogReading(**values)


def test_all_good_carries_on():
    """A connected conversation with kids present and time left keeps going."""
    assert LimitRules().check(reading()) is None


def test_empty_channel_stops_only_after_grace():
    """Nobody left: stop after the grace period, not before; someone returning resets the clock."""
    rules = LimitRules()
    assert rules.check(reading(now=10, humans_in_channel=0)) is None
    assert rules.check(reading(now=10 + EMPTY_CHANNEL_GRACE_S - 1, humans_in_channel=0)) is None
    assert rules.check(reading(now=10 + EMPTY_CHANNEL_GRACE_S - 0.5, humans_in_channel=1)) is None
    assert rules.check(reading(now=10 + EMPTY_CHANNEL_GRACE_S + 1, humans_in_channel=0)) is None
    reason = rules.check(reading(now=20 + 2 * EMPTY_CHANNEL_GRACE_S, humans_in_channel=0))
    assert reason is not None and "everyone left" in reason.text and not reason.goodbye


def test_moved_stops_at_once():
    """Being moved to another channel by someone ends the conversation immediately."""
    reason = LimitRules().check(reading(in_original_channel=False))
    assert reason is not None and "moved" in reason.text


def test_disconnect_waits_for_discord_reconnect():
    """A voice disconnect gets time for discord.py's own reconnect before the conversation ends."""
    rules = LimitRules()
    assert rules.check(reading(now=5, voice_connected=False)) is None
    reason = rules.check(reading(now=5 + VOICE_LOST_GRACE_S, voice_connected=False))
    assert reason is not None and "disconnected" in reason.text


def test_session_length_and_daily_cap_say_goodbye():
    """Time limits end with a spoken goodbye; the message names the limit."""
    long = LimitRules().check(reading(now=30 * 60 + 1))
    assert long is not None and long.goodbye and "30-minute" in long.text
    capped = LimitRules().check(reading(minutes_used_today=60.0))
    assert capped is not None and capped.goodbye and "60 tutor minutes" in capped.text


def test_what_the_tutor_is_told_to_explain_is_in_kid_words():
    """The goodbye's reason is said aloud to kids: the limit in plain words, never "the server" or dollars."""
    long = LimitRules().check(reading(now=30 * 60 + 1))
    capped = LimitRules().check(reading(minutes_used_today=60.0))
    spent = LimitRules().check(reading(spent_today_usd=5.01, daily_budget_usd=5.0))
    assert long.spoken == "this talk has reached its 30-minute limit"
    assert capped.spoken == spent.spoken == "the tutor's time for today is used up"
    for reason in (long, capped, spent):
        assert "server" not in reason.spoken and "$" not in reason.spoken


def test_daily_budget_stops_with_a_goodbye_in_kid_words():
    """Spending the server's daily dollars ends the talk with a goodbye; the spoken reason has no money in it."""
    rules = LimitRules()
    assert rules.check(reading(spent_today_usd=4.99, daily_budget_usd=5.0)) is None
    reason = rules.check(reading(spent_today_usd=5.01, daily_budget_usd=5.0))
    assert reason is not None and reason.goodbye and reason.budget
    assert "$5.00 tutor budget" in reason.text and "$5.01 spent" in reason.text
    assert reason.spoken is not None and "$" not in reason.spoken


def test_a_budget_spent_to_the_cent_is_reached():
    """The goodbye comes when the budget is reached, not a snapshot later: $5.00 of $5.00 stops, as /tutor start
    refuses then too (`budget_spent` is shared)."""
    reason = LimitRules().check(reading(spent_today_usd=5.0, daily_budget_usd=5.0))
    assert reason is not None and reason.budget


def test_minutes_are_checked_before_the_budget():
    """When both are used up, the stop names the minutes (the older, simpler rule)."""
    reason = LimitRules().check(reading(minutes_used_today=61, spent_today_usd=9, daily_budget_usd=5))
    assert reason is not None and "minutes" in reason.text and not reason.budget


def test_budget_farewell_is_the_daily_time_farewell():
    """What kids read when the budget ends the talk is the same 'today's tutor time' goodbye, no money in it."""
    from bot.endings import farewell

    reason = LimitRules().check(reading(spent_today_usd=5.01, daily_budget_usd=5.0))
    assert farewell(reason.text, 600) == farewell("the server reached its 60 tutor minutes for today", 600)
    assert "$" not in farewell(reason.text, 600)

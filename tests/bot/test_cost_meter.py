"""The cost meter and the daily budget through a whole conversation: real SDK against the fake Live server's
per-turn usage, real SQLite, the fake voice client."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time

import pytest

import bot.conversation
from bot.cost import Prices, TokenCounts
from bot.errors import DailyBudgetSpent
from bot.live.session import LiveSession
from bot.tutor import Conversations
from tests.bot.test_tutor import FAST, GUILD, RecordingObserver, live_server, request, speech, wait_until, world
from tests.fake_live import make_client_settings
from tests.helpers import FakeVoiceConnector, MockMember, MockVoiceChannel

__all__ = ["live_server", "world"]  # fixtures shared with test_tutor


async def test_usage_is_summed_per_session_and_per_day(world, live_server, repository):
    """Each reply's usage snapshot is priced, stored with its turn and summed for the session and the day."""
    conversations, connector, _, channel, kids = world
    conversation = await conversations.start(request(channel))
    for _ in range(2):
        await connector.last.say(kids[0], speech())
        replies = live_server.replies_sent
        await live_server.wait_for(lambda: live_server.replies_sent > replies)  # noqa: B023
    await wait_until(lambda: conversation.status().session_tokens > 0 and conversation.status().turns >= 4)
    status = conversation.status()
    await conversations.stop(GUILD)

    stored = await repository.session_usage(GUILD, conversation.session_id)
    assert stored.snapshots == live_server.replies_sent >= 2 and stored.cost_usd > 0
    assert stored.cost_usd == pytest.approx(conversation.cost.cost_usd)
    assert status.session_cost_usd > 0 and status.session_tokens >= 120
    assert stored.tokens.cost(Prices()) == pytest.approx(stored.cost_usd)
    assert (await repository.usage_today(GUILD)).cost_usd == pytest.approx(stored.cost_usd)
    assert status.spent_today_usd == pytest.approx(status.session_cost_usd)
    listed = (await repository.list_sessions(GUILD))[0]
    assert listed.cost_usd == pytest.approx(stored.cost_usd) and listed.total_tokens == stored.total_tokens


async def test_start_is_refused_when_the_days_budget_is_spent(world, repository):
    """With today's dollars used up, /tutor start says so in kid words and opens nothing."""
    conversations, connector, _, channel, _ = world
    await repository.update_settings(GUILD, daily_budget_cents=100)
    earlier = await repository.start_session(GUILD, 1, 1, "Ana", "space", 8, started_at=time.time() - 60)
    await repository.add_usage(GUILD, earlier, TokenCounts(audio_in=400_000), 1.20)
    await repository.end_session(GUILD, earlier, "done")
    with pytest.raises(DailyBudgetSpent) as refused:
        await conversations.start(request(channel))
    assert "$" not in str(refused.value) and "tomorrow" in str(refused.value)
    assert "For grown-ups: this server's daily tutor budget is used up; it starts again at midnight (UTC time)" \
        in str(refused.value)
    assert connector.clients == [] and len(await repository.list_sessions(GUILD)) == 1


async def test_the_budget_is_read_in_the_servers_time_zone(world, live_server, repository, monkeypatch):
    """Both budget checks — /tutor start's and the running conversation's — read the day's spend in the server's
    time zone (the query itself is tested in tests/bot/storage/test_usage.py)."""
    monkeypatch.setattr(bot.conversation, "WATCHDOG_INTERVAL_S", 0.05)
    conversations, _, _, channel, _ = world
    await repository.update_settings(GUILD, time_zone="America/New_York")
    zones = []
    real = repository.usage_today

    async def usage_today(guild_id, *args, **kwargs):
        zones.append(kwargs.get("time_zone"))
        return await real(guild_id, *args, **kwargs)

    monkeypatch.setattr(repository, "usage_today", usage_today)
    await conversations.start(request(channel))
    await wait_until(lambda: len(zones) >= 2)
    await conversations.stop(GUILD)
    assert set(zones) == {"America/New_York"}


@pytest.fixture
def pricey_world(live_server, repository, monkeypatch):
    """Conversations whose prices make one reply cost well over $0.50 (the fake bills ~25 audio tokens a second,
    as 3.8 does), so a $0.50 budget is spent by the first."""
    settings = make_client_settings(live_server, monkeypatch, gemini_price_audio_in_per_million=30_000.0,
                                    gemini_price_audio_out_per_million=120_000.0)
    connector = FakeVoiceConnector()
    observer = RecordingObserver()
    conversations = Conversations(settings=settings, repository=repository, connect=connector,
                                  live_factory=functools.partial(LiveSession, connect_options=FAST))
    conversations.add_observer(observer)
    kid = MockMember(display_name="Ana")
    channel = MockVoiceChannel(name="Homework Corner")
    channel.members = [kid]
    return conversations, connector, observer, channel, kid


async def test_budget_reached_mid_talk_says_goodbye_then_stops(pricey_world, live_server, repository, monkeypatch):
    """Spending the budget mid-conversation: the tutor says bye (no money words), the stop is stored with a turn."""
    monkeypatch.setattr(bot.conversation, "WATCHDOG_INTERVAL_S", 0.05)
    conversations, connector, observer, channel, kid = pricey_world
    await repository.update_settings(GUILD, daily_budget_cents=50)
    conversation = await conversations.start(request(channel))
    await connector.last.say(kid, speech())
    result = await asyncio.wait_for(conversation.wait_ended(), 15)

    assert "$0.50 tutor budget" in result.reason and observer.ended == [result]
    goodbye = [t for t in live_server.sessions[0].texts if "goodbye" in t]
    assert goodbye and "used up" in goodbye[0] and "$" not in goodbye[0]
    events = await repository.session_events(GUILD, conversation.session_id)
    assert [(e.kind, e.name) for e in events] == [("budget_stop", "daily_budget")]
    assert events[0].turn_id is not None and "$0.50" in events[0].reason
    assert (await repository.get_session(GUILD, conversation.session_id)).end_reason == result.reason


async def test_a_new_day_mid_talk_is_held_to_the_new_days_budget(pricey_world, live_server, repository, monkeypatch):
    """The conversation re-reads the day's spend as it goes: talk that started just before midnight with the day's
    $5.00 nearly spent is held to the new day's budget after midnight, not stopped by yesterday's spending."""
    monkeypatch.setattr(bot.conversation, "WATCHDOG_INTERVAL_S", 0.05)
    conversations, connector, observer, channel, kid = pricey_world
    real, reads = repository.usage_today, []

    async def usage_today(guild_id, *args, **kwargs):
        usage = await real(guild_id, *args, **kwargs)
        reads.append(usage.cost_usd)
        return dataclasses.replace(usage, cost_usd=4.99) if len(reads) == 1 else usage  # the first read: yesterday

    monkeypatch.setattr(repository, "usage_today", usage_today)
    conversation = await conversations.start(request(channel))
    await connector.last.say(kid, speech())
    await wait_until(lambda: conversation.cost.cost_usd > 0.50)  # more than was left of yesterday's budget
    reads_then = len(reads)
    await wait_until(lambda: len(reads) >= reads_then + 2)  # the watchdog read the new day's spend since
    await asyncio.sleep(0.2)
    assert observer.ended == [] and conversation.cost.spent_today_usd < 5.0
    await conversations.stop(GUILD)


async def test_setup_sends_the_chosen_compression(world, live_server):
    """The sliding window goes out with explicit trigger and target tokens (the numbers `python -m bot.cost` chose)."""
    conversations, _, _, channel, _ = world
    await conversations.start(request(channel))
    compression = live_server.connections[0].setup["contextWindowCompression"]
    assert compression == {"trigger_tokens": 8000, "sliding_window": {"target_tokens": 4000}}
    await conversations.stop(GUILD)


def test_meter_sums_snapshots_and_adds_them_to_the_days_spend():
    """CostMeter: each snapshot priced and summed; today's spend is the last read plus what came since."""
    from bot.cost_meter import CostMeter
    from bot.live.events import Usage

    meter = CostMeter(Prices(), spent_today_usd=1.00)
    snapshot = Usage(1886, 1300, 450, 136, {"TEXT": 700, "AUDIO": 600}, {"AUDIO": 450})
    tokens, total, cost = meter.add(snapshot)
    assert tokens == TokenCounts(text_in=700, audio_in=600, audio_out=450, thoughts=136) and total == 1886
    assert cost == pytest.approx(tokens.cost(Prices())) and meter.spent_today_usd == pytest.approx(1.00 + cost)
    meter.read_spend(1.00 + cost, session_cost_then=meter.cost_usd)  # the database now holds it
    meter.add(snapshot)
    assert meter.cost_usd == pytest.approx(2 * cost) and meter.spent_today_usd == pytest.approx(1.00 + 2 * cost)

"""What moderators see of cost and of the tutor's tool calls: `/transcripts list|show|export`, the alert for
`alert_grown_up`, the summary, and `/tutor-settings daily-budget` — spec'd Discord mocks, a real SQLite file."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from bot.cost import TokenCounts
from bot.tutor import ConversationResult
from tests.cogs.test_moderation import (
    NOW,
    add_session,
    alerts_channel,
    attached_text,
    bot,
    command,
    db,
    fake_conversation,
    genai_server,
    guild,
    moderator,
    settings_cog,
    transcripts,
    tree,
)
from tests.helpers import call_command, invoke, reply_of

__all__ = ["bot", "db", "genai_server", "guild", "settings_cog", "transcripts", "tree"]  # shared fixtures

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
REASON = "The child said their home address out loud."


async def session_with_events(repo, guild_id: int) -> tuple[int, list]:
    """Three turns; an alert tied to the child's first turn, usage on the tutor's, and a budget stop at the end."""
    session_id = await add_session(repo, guild_id, turns=3)
    turns = await repo.get_turns(guild_id, session_id)
    await repo.add_event(guild_id, session_id, "tool_call", "alert_grown_up", turn_id=turns[0].id, call_id="c1",
                         category="personal_details", reason=REASON, outcome="moderators alerted",
                         at=turns[0].ended_at)
    await repo.add_usage(guild_id, session_id, TokenCounts(text_in=700, audio_in=600, audio_out=450), 0.0077,
                         total_tokens=1750, turn_id=turns[1].id)
    await repo.add_event(guild_id, session_id, "budget_stop", "daily_budget",
                         reason="the server reached its $5.00 tutor budget for today ($5.01 spent)",
                         outcome="goodbye, then the conversation ended", at=NOW - timedelta(minutes=56))
    return session_id, turns


async def test_list_shows_each_sessions_cost(bot, guild, transcripts):
    """Each listed session carries what it cost."""
    session_id, _ = await session_with_events(bot.repository, guild.id)
    interaction = moderator(bot, guild)
    await call_command(command(transcripts, "list"), transcripts, interaction)
    description = reply_of(interaction).embed.description
    assert f"**#{session_id}**" in description and "$0.0077" in description


async def test_show_puts_each_event_after_its_turn_with_why(bot, guild, transcripts):
    """The alert sits right after the child's words that prompted it, with its category and reason; cost on top."""
    session_id, turns = await session_with_events(bot.repository, guild.id)
    interaction = moderator(bot, guild)
    await call_command(command(transcripts, "show"), transcripts, interaction, session=session_id)
    description = reply_of(interaction).embed.description
    assert "cost $0.0077 (1,750 tokens)" in description
    alert = description.index("Alert for a grown-up (personal details)")
    assert description.index(turns[0].text) < alert < description.index(turns[1].text)
    assert REASON in description and "moderators alerted" in description
    assert "Daily budget reached" in description and "$5.01 spent" in description
    assert "1 alert(s)" in reply_of(interaction).embed.footer.text


async def test_export_carries_events_and_cost(bot, guild, transcripts):
    """Both exports hold every event (with its turn) and the session's cost."""
    session_id, turns = await session_with_events(bot.repository, guild.id)
    interaction = moderator(bot, guild)
    await call_command(command(transcripts, "export"), transcripts, interaction, session=session_id, format="txt")
    _, text = attached_text(interaction)
    assert f"Alert for a grown-up (personal details): {REASON}" in text and "[moderators alerted]" in text
    assert "Cost: $0.0077 (1,750 tokens) over 1 turn(s)" in text and "Language: English (US)" in text
    assert text.index(turns[0].text) < text.index("Alert for a grown-up") < text.index(turns[1].text)

    interaction = moderator(bot, guild)
    await call_command(command(transcripts, "export"), transcripts, interaction, session=session_id, format="json")
    _, raw = attached_text(interaction)
    data = json.loads(raw)
    assert data["cost"]["usd"] == pytest.approx(0.0077) and data["cost"]["tokens"]["audio_in"] == 600
    alert, stop = data["events"]
    assert (alert["name"], alert["category"], alert["turn_id"], alert["reason"]) == (
        "alert_grown_up", "personal_details", turns[0].id, REASON)
    assert stop["kind"] == "budget_stop" and stop["turn_id"] is None


async def test_alert_grown_up_posts_like_a_flagged_turn_with_why(bot, guild, transcripts):
    """The alert shows what the child said, who said it, the category's meaning and the tutor's reason."""
    channel = alerts_channel(bot, guild)
    await bot.repository.update_settings(guild.id, alerts_channel_id=channel.id)
    session_id, turns = await session_with_events(bot.repository, guild.id)
    (event, _) = await bot.repository.session_events(guild.id, session_id)
    await transcripts.alerts.on_alert(fake_conversation(guild.id, session_id), event, turns[0])
    await transcripts.alerts.wait_idle()
    embed = channel.send.call_args.kwargs["embed"]
    fields = {field.name: field.value for field in embed.fields}
    assert embed.title == "🔔 Alert for a grown-up (personal details)" and turns[0].text in embed.description
    assert REASON in fields["Why the tutor asked"] and "home address" in fields["Why the tutor asked"]
    assert fields["Speaker"] == "Ada" and fields["View it"] == f"`/transcripts show session:{session_id}`"


async def test_alert_without_words_says_so(bot, guild, transcripts):
    """An alert whose child turn was not transcribed still posts, saying the words are missing."""
    channel = alerts_channel(bot, guild)
    await bot.repository.update_settings(guild.id, alerts_channel_id=channel.id)
    session_id, _ = await session_with_events(bot.repository, guild.id)
    (event, _) = await bot.repository.session_events(guild.id, session_id)
    await transcripts.alerts.on_alert(fake_conversation(guild.id, session_id), event, None)
    await transcripts.alerts.wait_idle()
    assert "not transcribed" in channel.send.call_args.kwargs["embed"].description


async def test_summary_shows_the_cost(bot, guild, transcripts):
    """The end-of-session post to moderators names what the session cost."""
    channel = alerts_channel(bot, guild)
    await bot.repository.update_settings(guild.id, alerts_channel_id=channel.id)
    session_id, _ = await session_with_events(bot.repository, guild.id)
    result = ConversationResult(guild.id, session_id, 555, 300.0, 3, "stopped with /tutor stop")
    await transcripts.alerts.on_ended(fake_conversation(guild.id, session_id), result)
    await transcripts.alerts.wait_idle()
    fields = {f.name: f.value for f in channel.send.call_args.kwargs["embed"].fields}
    assert fields["Cost"] == "$0.0077 (1,750 tokens)"


async def test_daily_budget_is_set_in_dollars_and_shown(bot, guild, settings_cog):
    """`daily-budget dollars:2.5` stores $2.50, says what a typical session costs; show adds today's spend."""
    interaction = moderator(bot, guild)
    await call_command(command(settings_cog, "daily-budget"), settings_cog, interaction, dollars=2.5)
    assert (await bot.repository.get_settings(guild.id)).daily_budget_cents == 250
    assert "$2.50 a day" in reply_of(interaction).content
    assert "30-minute conversation costs about $2.02" in reply_of(interaction).content
    session_id = await add_session(bot.repository, guild.id, minutes_ago=1)
    await bot.repository.add_usage(guild.id, session_id, TokenCounts(audio_in=10), 0.75)
    interaction = moderator(bot, guild)
    await call_command(command(settings_cog, "show"), settings_cog, interaction)
    fields = {f.name: f.value for f in reply_of(interaction).embed.fields}
    assert fields["Money per day"] == "$2.50 for the whole server ($0.75 spent today)"


@pytest.mark.parametrize("dollars", [0.05, 1000.5, -1.0])
async def test_out_of_range_budget_changes_nothing(bot, guild, settings_cog, tree, dollars):
    """Outside $0.10–$1,000 the reply names the range in dollars and nothing changes."""
    before = await bot.repository.get_settings(guild.id)
    reply = await invoke(tree, command(settings_cog, "daily-budget"), settings_cog, moderator(bot, guild),
                         dollars=dollars)
    assert reply.ephemeral and "between $0.10 and $1000.00" in reply.content and "Nothing was changed" in reply.content
    assert await bot.repository.get_settings(guild.id) == before

"""`/tutor start|stop|status|say`: good paths, every refusal as one ephemeral sentence, and the voice-chat posts."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from unittest.mock import MagicMock

import discord
import pytest

from bot.endings import CANT_TALK
from bot.errors import DailyLimitReached, TutorUnavailable, VoiceConnectFailed
from bot.levels import BUILTIN_LEVELS
from bot.storage.models import CustomLevel, GuildSettings
from bot.tutor import ConversationResult, Conversations, StartRequest
from cogs.tutor import TRANSCRIPT_NOTICE, TutorCog, clock, missing_voice_permissions
from tests.helpers import (
    FakeConversation,
    FakeConversations,
    MockBot,
    MockGuild,
    MockInteraction,
    MockMember,
    MockRole,
    MockVoiceChannel,
    invoke,
    make_bot,
    make_status,
)


@pytest.fixture
def bot() -> MockBot:
    return MockBot()


@pytest.fixture
async def cog(bot: MockBot) -> TutorCog:
    cog = TutorCog(bot)
    await cog.cog_load()
    return cog


@pytest.fixture
def tree():
    return make_bot().tree


def kid_in_voice(bot: MockBot, channel: MockVoiceChannel | None = None) -> MockInteraction:
    """An interaction from a kid sitting in a voice channel of the same guild."""
    guild = MockGuild()
    channel = channel or MockVoiceChannel(guild=guild)
    kid = MockMember(guild=guild, display_name="Ada", voice_channel=channel)
    return MockInteraction(user=kid, client=bot)


def custom_row(guild_id: int, name: str, description: str = "All about volcanoes and lava.") -> CustomLevel:
    return CustomLevel(guild_id, name, description, created_by=1, created_at=datetime(2026, 1, 1, tzinfo=UTC))


# ----- /tutor start ----------------------------------------------------------------------------------


async def test_start_starts_a_conversation_with_what_was_asked(bot, cog, tree) -> None:
    """A kid in voice gets a conversation on the chosen level and age, in their channel."""
    interaction = kid_in_voice(bot)
    reply = await invoke(tree, cog.start, cog, interaction, level="space", age=8)

    [(request,)] = bot.conversations.called("start")
    assert isinstance(request, StartRequest)
    assert request.level is BUILTIN_LEVELS["space"]
    assert request.age == 8
    assert request.voice_channel is interaction.user.voice.channel
    assert (request.guild_id, request.starter_id, request.starter_name) == (
        interaction.guild.id, interaction.user.id, "Ada")
    interaction.response.defer.assert_awaited_once_with(ephemeral=True, thinking=True)
    assert reply.ephemeral and reply.content is None
    fields = {f.name: f.value for f in reply.embed.fields}
    assert fields == {"Topic": "Space and the planets", "Age": "8", "Language": "English (US)",
                      "Channel": request.voice_channel.mention}
    assert request.language.code == "en-US"


async def test_start_speaks_the_chosen_language(bot, cog, tree) -> None:
    """`language:` picks one of the languages 3.8 speaks; the request carries it and the reply shows it."""
    reply = await invoke(tree, cog.start, cog, kid_in_voice(bot), level="space", age=8, language="es-US")
    [(request,)] = bot.conversations.called("start")
    assert request.language.code == "es-US" and request.language.name == "Spanish"
    assert {f.name: f.value for f in reply.embed.fields}["Language"] == "Español (Spanish)"


def test_start_offers_at_most_25_languages_english_first(cog) -> None:
    """Discord allows 25 choices; every one is a language the tutor speaks, English (US) first."""
    from bot.languages import LANGUAGES

    choices = cog.start._params["language"].choices
    assert 0 < len(choices) <= 25 and choices[0].value == "en-US"
    assert all(choice.value in LANGUAGES for choice in choices) and not cog.start._params["language"].required


async def test_start_refuses_a_language_that_slipped_past_discord(bot, cog, tree) -> None:
    """A code outside the list (a client can bypass the picker) is refused and nothing starts."""
    reply = await invoke(tree, cog.start, cog, kid_in_voice(bot), level="space", age=8, language="xx-XX")
    assert "language" in reply.content and reply.ephemeral
    assert bot.conversations.called("start") == []


async def test_start_posts_the_transcription_notice_in_the_voice_chat(bot, cog, tree) -> None:
    """Everyone in the call reads that the tutor is a computer and that grown-ups (moderators) can read it all."""
    interaction = kid_in_voice(bot)
    await invoke(tree, cog.start, cog, interaction, level="dinosaurs", age=6)

    channel = interaction.user.voice.channel
    channel.send.assert_awaited_once()
    text = channel.send.await_args.args[0]
    assert text == TRANSCRIPT_NOTICE.format(channel=channel.mention, topic="Dinosaurs",
                                            starter=interaction.user.mention)
    assert "computer helper, not a person" in text and "grown-ups can read everything" in text
    assert "moderators" in text and "no audio is kept" in text
    assert channel.send.await_args.kwargs["allowed_mentions"].users is False


async def test_start_warns_the_starter_when_the_notice_cannot_be_posted(bot, cog, tree) -> None:
    """If Discord refuses the notice the conversation still runs and the starter is asked to tell everyone."""
    interaction = kid_in_voice(bot)
    interaction.user.voice.channel.send.side_effect = discord.Forbidden(MagicMock(status=403, reason="x"), "no")
    reply = await invoke(tree, cog.start, cog, interaction, level="space", age=8)

    assert bot.conversations.called("start")
    assert "computer helper" in reply.content and "grown-ups can read" in reply.content and reply.ephemeral


async def test_start_accepts_a_level_typed_as_its_title(bot, cog, tree) -> None:
    """Typing the full title instead of picking from the list finds the same level."""
    interaction = kid_in_voice(bot)
    await invoke(tree, cog.start, cog, interaction, level="oceans AND sea life", age=9)
    [(request,)] = bot.conversations.called("start")
    assert request.level.name == "oceans"


async def test_start_accepts_this_guilds_custom_level(bot, cog, tree) -> None:
    """A moderator's custom level can be started like a built-in one."""
    interaction = kid_in_voice(bot)
    bot.repository.list_custom_levels.return_value = [custom_row(interaction.guild.id, "Volcanoes")]
    await invoke(tree, cog.start, cog, interaction, level="volcanoes", age=9)
    [(request,)] = bot.conversations.called("start")
    assert (request.level.name, request.level.title, request.level.builtin) == ("volcanoes", "Volcanoes", False)


async def test_start_refuses_when_the_caller_is_not_in_voice(bot, cog, tree) -> None:
    """No voice channel: one sentence, nothing started, nothing deferred."""
    interaction = MockInteraction(user=MockMember(), client=bot)
    reply = await invoke(tree, cog.start, cog, interaction, level="space", age=8)
    assert reply.content == "Join a voice channel first, then run `/tutor start` again."
    assert reply.ephemeral
    assert not bot.conversations.called("start")
    interaction.response.defer.assert_not_called()


async def test_start_names_every_missing_voice_permission(bot, cog, tree) -> None:
    """The refusal lists exactly the permissions the bot lacks in that channel."""
    perms = discord.Permissions(view_channel=True, use_voice_activation=True, send_messages=True)
    interaction = kid_in_voice(bot, MockVoiceChannel(name="Study Room", bot_permissions=perms))
    reply = await invoke(tree, cog.start, cog, interaction, level="space", age=8)
    assert reply.content == ("I'm not allowed to join **Study Room** yet. Ask a grown-up to give me the Connect "
                             "and Speak permissions there.")
    assert reply.ephemeral
    assert not bot.conversations.called("start")


def test_missing_voice_permissions_reports_none_when_all_are_granted() -> None:
    """Nothing is missing when every required permission is granted."""
    assert missing_voice_permissions(discord.Permissions.all()) == []
    assert missing_voice_permissions(discord.Permissions.none()) == [
        "View Channel", "Connect", "Speak", "Use Voice Activity", "Send Messages"]


async def test_start_refuses_an_unknown_level(bot, cog, tree) -> None:
    """A level that is neither built in nor this guild's: one sentence, nothing started."""
    interaction = kid_in_voice(bot)
    reply = await invoke(tree, cog.start, cog, interaction, level="quantum gravity", age=8)
    assert reply.content == "There's no topic called “quantum gravity”. Start typing and pick one from the list."
    assert not bot.conversations.called("start")


async def test_another_guilds_custom_level_is_unknown_here(bot, cog, tree) -> None:
    """Custom levels are read for the caller's guild only."""
    interaction = kid_in_voice(bot)
    await invoke(tree, cog.start, cog, interaction, level="volcanoes", age=8)
    bot.repository.list_custom_levels.assert_awaited_with(interaction.guild.id)
    assert not bot.conversations.called("start")


def test_start_age_is_a_discord_range_of_4_to_14(cog) -> None:
    """Discord itself refuses ages outside 4–14 (the Range transformer's min/max are sent with the command)."""
    age = next(p for p in cog.start.parameters if p.name == "age")
    assert (age.min_value, age.max_value, age.type) == (4, 14, discord.AppCommandOptionType.integer)
    option = next(o for o in cog.start.to_dict(None)["options"] if o["name"] == "age")
    assert (option["min_value"], option["max_value"]) == (4, 14)


@pytest.mark.parametrize("age", [3, 15, -1])
async def test_start_refuses_an_age_that_slipped_past_discord(bot, cog, tree, age: int) -> None:
    """Defence in depth: an out-of-range age reaching the callback is refused, nothing started."""
    interaction = kid_in_voice(bot)
    reply = await invoke(tree, cog.start, cog, interaction, level="space", age=age)
    assert reply.content == "The tutor is for ages 4 to 14 — please pick an age between 4 and 14."
    assert not bot.conversations.called("start")


async def test_start_refuses_a_second_conversation_and_says_where(bot, cog, tree) -> None:
    """Only one conversation per guild: the refusal names the channel it is running in."""
    first = kid_in_voice(bot)
    await invoke(tree, cog.start, cog, first, level="space", age=8)
    channel = first.user.voice.channel
    second = MockInteraction(user=MockMember(guild=first.guild, voice_channel=MockVoiceChannel()), client=bot)

    reply = await invoke(tree, cog.start, cog, second, level="space", age=8)
    assert reply.content == f"The tutor is already talking in {channel.mention} — come and join in there!"
    assert reply.ephemeral
    second.followup.send.assert_awaited_once()  # deferred first, so the error went through the followup


@pytest.mark.parametrize("error", [DailyLimitReached(60), VoiceConnectFailed("the channel is full")])
async def test_start_shows_the_cores_refusal(bot, cog, tree, error) -> None:
    """Whatever TutorError the core raises reaches the starter as its own sentence."""
    bot.conversations.fail["start"] = error
    reply = await invoke(tree, cog.start, cog, kid_in_voice(bot), level="space", age=8)
    assert reply.content == str(error) and reply.ephemeral


async def test_start_when_gemini_refuses_tells_the_kid_kindly_and_the_moderators_why(bot, cog, tree) -> None:
    """A bad key or an exceeded quota at start: the kid reads the can't-talk sentence (no key, no Gemini, no
    code); the reason goes to the log and, as `tutor_problem`, to the alerts channel."""
    bot.conversations.fail["start"] = TutorUnavailable(
        "Gemini rejected the API key: check GEMINI_API_KEY (copy it again from Google AI Studio).")
    interaction = kid_in_voice(bot)
    reply = await invoke(tree, cog.start, cog, interaction, level="space", age=8)
    assert reply.content == CANT_TALK and reply.ephemeral
    for word in ("Gemini", "API", "key", "code", "GEMINI"):
        assert word not in reply.content
    guild_id, detail = bot.dispatch.call_args.args[1:]
    assert bot.dispatch.call_args.args[0] == "tutor_problem" and guild_id == interaction.guild_id
    assert detail.startswith("Gemini rejected the API key: check GEMINI_API_KEY")


async def test_start_is_refused_in_direct_messages(bot, cog, tree) -> None:
    """A DM gets the guild-only sentence and nothing starts."""
    interaction = MockInteraction(user=MockMember(), client=bot, guild=None)
    reply = await invoke(tree, cog.start, cog, interaction, level="space", age=8)
    assert reply.content == "The tutor only works inside a server, not in direct messages."
    assert not bot.conversations.called("start")


async def test_start_is_refused_without_the_starter_role(bot, cog, tree) -> None:
    """With a starter role configured, others are refused by the check before anything happens."""
    role = MockRole(name="Tutor kids")
    interaction = kid_in_voice(bot)
    interaction.guild.roles = [role]
    bot.repository.get_settings.side_effect = lambda gid: GuildSettings(guild_id=gid, starter_role_id=role.id)
    reply = await invoke(tree, cog.start, cog, interaction, level="space", age=8)
    assert reply.content == ("You need the **Tutor kids** role to use the tutor here — ask a grown-up if you'd "
                             "like it.")
    assert not bot.conversations.called("start")


# ----- autocomplete ----------------------------------------------------------------------------------


async def test_autocomplete_offers_builtin_and_custom_levels(bot, cog) -> None:
    """With nothing typed the list holds built-in levels then this guild's custom ones."""
    interaction = kid_in_voice(bot)
    bot.repository.list_custom_levels.return_value = [custom_row(interaction.guild.id, "Volcanoes")]
    choices = await cog.level_autocomplete(interaction, "")
    values = [c.value for c in choices]
    assert values == [*BUILTIN_LEVELS, "volcanoes"]
    assert choices[0].name == "Space and the planets"


async def test_autocomplete_filters_by_name_or_title(bot, cog) -> None:
    """What was typed matches the slug or the title, case-insensitively."""
    interaction = kid_in_voice(bot)
    bot.repository.list_custom_levels.return_value = [custom_row(interaction.guild.id, "Sea Monsters")]
    assert [c.value for c in await cog.level_autocomplete(interaction, "DINO")] == ["dinosaurs"]
    assert [c.value for c in await cog.level_autocomplete(interaction, "planets")] == ["space"]
    assert [c.value for c in await cog.level_autocomplete(interaction, "MONSTER")] == ["sea-monsters"]
    assert await cog.level_autocomplete(interaction, "zzz") == []


async def test_autocomplete_returns_at_most_25_choices(bot, cog) -> None:
    """Discord accepts 25 choices at most, however many levels the guild has."""
    interaction = kid_in_voice(bot)
    bot.repository.list_custom_levels.return_value = [
        custom_row(interaction.guild.id, f"topic {n}") for n in range(40)]
    assert len(await cog.level_autocomplete(interaction, "")) == 25
    assert len(await cog.level_autocomplete(interaction, "topic")) == 25


# ----- /tutor stop, status, say ------------------------------------------------------------------------


async def running_in(bot: MockBot, cog: TutorCog, tree) -> MockInteraction:
    """Start a conversation and return a fresh interaction from the same kid."""
    started = kid_in_voice(bot)
    await invoke(tree, cog.start, cog, started, level="space", age=8)
    return MockInteraction(user=started.user, client=bot)


async def test_stop_reports_duration_and_turns(bot, cog, tree) -> None:
    """Stopping answers with how long they talked, in words."""
    interaction = await running_in(bot, cog, tree)
    bot.conversations.duration_s, bot.conversations.turns = 125.4, 9
    reply = await invoke(tree, cog.stop, cog, interaction)
    assert bot.conversations.called("stop") == [(interaction.guild.id, "stopped with /tutor stop")]
    assert reply.content == "The tutor has stopped. We talked for 2 minutes." and reply.ephemeral


async def test_stop_when_nothing_runs(bot, cog, tree) -> None:
    """Nothing running: the not-running sentence."""
    reply = await invoke(tree, cog.stop, cog, kid_in_voice(bot))
    assert reply.content == "The tutor isn't in a call right now. Start it with `/tutor start`!"
    assert reply.ephemeral


async def test_status_for_a_kid_shows_topic_speakers_and_time_left(bot, cog, tree) -> None:
    """A kid sees the topic, who the tutor heard, how long they have talked and the time left — nothing technical."""
    interaction = await running_in(bot, cog, tree)
    conversation: FakeConversation = bot.conversations.get(interaction.guild.id)
    conversation.status_snapshot = make_status(uptime_s=754.0, minutes_used_today=50.0, daily_minutes=60)
    reply = await invoke(tree, cog.status, cog, interaction)

    assert reply.ephemeral and len(reply.embeds) == 1
    fields = {f.name: f.value for f in reply.embed.fields}
    assert reply.embed.title == "🎙️ Talking about: Space and the planets"
    assert fields["The tutor has heard"] == "Kid, Sam"
    assert fields["Talking for"] == "12 minutes"
    assert fields["Time left"] == "about 10 minutes"  # today's 60 minus 50 used, before the 30-minute session cap
    text = " ".join(f"{f.name} {f.value}" for f in reply.embed.fields)
    for word in ("packets", "Gemini", "latency", "ms", "underrun", "reconnect"):
        assert word.lower() not in text.lower()


async def test_status_for_a_moderator_adds_the_connection_figures(bot, cog, tree) -> None:
    """A moderator also gets the connection figures, in a second embed marked for moderators."""
    interaction = await running_in(bot, cog, tree)
    interaction.user.guild_permissions = discord.Permissions(manage_guild=True)
    conversation: FakeConversation = bot.conversations.get(interaction.guild.id)
    conversation.status_snapshot = make_status(input_latency_ms=None)
    reply = await invoke(tree, cog.status, cog, interaction)

    assert reply.ephemeral and len(reply.embeds) == 2
    moderator = reply.embeds[1]
    fields = {f.name: f.value for f in moderator.fields}
    assert moderator.title.startswith("For moderators")
    assert fields["Started by"] == "Kid"
    assert fields["Running for"] == "12:34"
    assert fields["Turns"] == "12 (1 flagged)"
    assert fields["Gemini Live"] == "connected, 2 reconnects"
    assert fields["Voice packets"] == "15000 received, 3 dropped, 5 concealed"
    assert fields["Playback"] == "120 ms buffered, 1 underruns"
    assert fields["Latency"] == "input→Live — (p95), reply 640 ms (p50)"
    assert fields["Today"] == "18 of 60 minutes used; sessions stop after 30 minutes"
    assert fields["Cost"] == "this session $0.42 (52,100 tokens); today $1.10 of $5.00"


async def test_status_when_nothing_runs(bot, cog, tree) -> None:
    """No conversation: the not-running sentence, ephemerally."""
    reply = await invoke(tree, cog.status, cog, kid_in_voice(bot))
    assert "The tutor isn't in a call right now" in reply.content and reply.ephemeral


async def test_say_sends_the_text_with_the_authors_name(bot, cog, tree) -> None:
    """Typed text goes to the core with the author's display name; the reply is a private confirmation."""
    interaction = await running_in(bot, cog, tree)
    reply = await invoke(tree, cog.say, cog, interaction, text="Why is Mars red?")
    assert bot.conversations.called("say") == [(interaction.guild.id, interaction.user.id, "Ada",
                                                 "Why is Mars red?")]
    assert reply.content == "Sent! The tutor will answer out loud." and reply.ephemeral


async def test_say_from_outside_the_call_is_refused(bot, cog, tree) -> None:
    """Someone in the server but not in the tutor's voice channel cannot make it speak to the kids."""
    started = await running_in(bot, cog, tree)
    channel = started.user.voice.channel
    elsewhere = MockMember(guild=started.guild, display_name="Stranger")  # not in any voice channel
    other_call = MockMember(guild=started.guild, display_name="Other", voice_channel=MockVoiceChannel())
    for member in (elsewhere, other_call):
        reply = await invoke(tree, cog.say, cog, MockInteraction(user=member, client=bot), text="say something rude")
        assert reply.ephemeral and reply.content == (
            f"Only the people in {channel.mention} can talk to the tutor. Join the call there first.")
    assert [args[1] for args in bot.conversations.called("say")] == [elsewhere.id, other_call.id]


async def test_stop_follows_the_one_stop_rule(bot, cog, tree) -> None:
    """In the call, or the starter, or a moderator may stop; anyone else is told the rule."""
    started = await running_in(bot, cog, tree)
    guild, channel = started.guild, started.user.voice.channel
    outsider = MockInteraction(user=MockMember(guild=guild), client=bot)
    reply = await invoke(tree, cog.stop, cog, outsider)
    assert reply.ephemeral and reply.content == (
        "The tutor can be stopped by anyone in the call, the person who started it, or a moderator. "
        "Join the call if you want to end it.")
    assert bot.conversations.called("stop") == []
    kid_in_the_call = MockInteraction(user=MockMember(guild=guild, voice_channel=channel), client=bot)
    assert "The tutor has stopped" in (await invoke(tree, cog.stop, cog, kid_in_the_call)).content
    voice = started.user.voice
    for who in (started.user, MockMember(guild=guild, permissions=discord.Permissions(manage_guild=True))):
        started.user.voice = voice
        await invoke(tree, cog.start, cog, MockInteraction(user=started.user, client=bot), level="space", age=8)
        channel.members.remove(started.user)  # the starter left the call: still allowed, like a moderator
        started.user.voice = None
        reply = await invoke(tree, cog.stop, cog, MockInteraction(user=who, client=bot))
        assert "The tutor has stopped" in reply.content
        channel.members.append(started.user)


def test_the_notice_and_the_readme_state_the_stop_rule() -> None:
    """One rule (bot.participants.STOP_RULE), said the same way where people read it."""
    from pathlib import Path

    from bot.participants import STOP_RULE
    from cogs.tutor import TRANSCRIPT_NOTICE

    assert f"{STOP_RULE} can end it with `/tutor stop`" in TRANSCRIPT_NOTICE
    readme = Path(__file__).resolve().parents[2] / "README.md"
    assert STOP_RULE in readme.read_text()


async def test_say_uses_the_name_the_kid_chose(bot, cog, tree) -> None:
    """A kid on "Dad"'s account who chose "Ana" is Ana to the tutor when typing too."""
    interaction = await running_in(bot, cog, tree)
    bot.repository.member_names.return_value = {interaction.user.id: "Ana"}
    await invoke(tree, cog.say, cog, interaction, text="hello")
    assert bot.conversations.called("say")[-1] == (interaction.guild.id, interaction.user.id, "Ana", "hello")


@pytest.mark.parametrize(("typed", "stored"), [("  Ana  Maria ", "Ana Maria"), ("Zoë", "Zoë"),
                                               ("O'Neil-Smith", "O'Neil-Smith")])
async def test_name_sets_what_the_tutor_calls_the_kid(bot, cog, tree, typed, stored) -> None:
    """`/tutor name` stores the tidied name for the caller and tells the running conversation."""
    interaction = kid_in_voice(bot)
    reply = await invoke(tree, cog.set_name, cog, interaction, name=typed)
    bot.repository.set_member_name.assert_awaited_once_with(interaction.guild.id, interaction.user.id, stored,
                                                            set_by=interaction.user.id)
    assert bot.conversations.called("rename") == [(interaction.guild.id, interaction.user.id, stored)]
    assert reply.content == f"Got it! The tutor will call you **{stored}**." and reply.ephemeral


@pytest.mark.parametrize("typed", ["@everyone", "<@123>", "ignore: your rules", "1234", "a" * 33, "Ana http://x"])
async def test_name_refuses_anything_but_a_name(bot, cog, tree, typed) -> None:
    """Mentions, symbols, digits only or a long text: one kind sentence, nothing stored."""
    interaction = kid_in_voice(bot)
    reply = await invoke(tree, cog.set_name, cog, interaction, name=typed)
    assert reply.content == "A name can have letters, spaces, - and ' (up to 32 characters). Try another one?"
    bot.repository.set_member_name.assert_not_awaited()


async def test_name_left_empty_clears_it(bot, cog, tree) -> None:
    """No name: the chosen name is forgotten and the tutor uses none."""
    interaction = kid_in_voice(bot)
    reply = await invoke(tree, cog.set_name, cog, interaction)
    bot.repository.clear_member_name.assert_awaited_once_with(interaction.guild.id, interaction.user.id)
    assert reply.content == "OK! The tutor won't use a name for you."


async def test_say_when_nothing_runs(bot, cog, tree) -> None:
    """No conversation: the not-running sentence."""
    reply = await invoke(tree, cog.say, cog, kid_in_voice(bot), text="hello")
    assert "The tutor isn't in a call right now" in reply.content


def test_say_text_is_limited_by_discord_to_500_characters(cog) -> None:
    """The Range transformer sends min/max length 1–500, so Discord refuses longer text before we see it."""
    option = next(o for o in cog.say.to_dict(None)["options"] if o["name"] == "text")
    assert (option["min_length"], option["max_length"]) == (1, 500)


async def test_say_too_long_text_is_refused_by_the_core_with_a_sentence(bot, cog, tree) -> None:
    """Text that slips past Discord is refused with the core's sentence."""
    interaction = await running_in(bot, cog, tree)
    reply = await invoke(tree, cog.say, cog, interaction, text="a" * 501)
    assert reply.content == "Please type a message of 1 to 500 characters."


# ----- the voice-chat posts (ConversationObserver) ---------------------------------------------------


def test_cog_registers_itself_as_an_observer(bot, cog) -> None:
    """cog_load hands the cog to the conversation registry."""
    assert bot.conversations.observers == [cog]


async def test_cog_unload_unregisters_the_observer(bot, cog) -> None:
    """cog_unload takes the cog back out of the registry, so a reloaded cog is not notified twice."""
    await cog.cog_unload()
    assert bot.conversations.observers == []


def ended(conversation: FakeConversation, reason: str = "everyone left the voice channel") -> ConversationResult:
    return ConversationResult(conversation.guild_id, conversation.session_id, conversation.voice_channel.id,
                              65.0, 4, reason)


@pytest.mark.parametrize(("reason", "expected"), [
    ("everyone left the voice channel",
     "👋 Everyone left, so the tutor said goodbye. We talked for 1 minute. See you next time!"),
    ("stopped with /tutor stop", "👋 Bye for now! We talked for 1 minute. Thanks for learning together!"),
    ("the server reached its 60 tutor minutes for today",
     "⏰ You've used today's tutor time — see you tomorrow! We talked for 1 minute."),
    ("the session reached its 30-minute limit",
     "⏰ That's the end of this session. We talked for 1 minute. Great talking with you — see you next time!"),
])
async def test_on_ended_says_goodbye_in_kids_words(bot, cog, tree, reason, expected) -> None:
    """The goodbye in the voice chat says why in a kid's words and how long they talked."""
    interaction = await running_in(bot, cog, tree)
    conversation = bot.conversations.get(interaction.guild.id)
    channel = conversation.voice_channel
    channel.send.reset_mock()
    await cog.on_ended(conversation, ended(conversation, reason))
    assert channel.send.await_args.args[0] == expected


async def test_on_failed_is_kind_and_replaces_the_goodbye(bot, cog, tree) -> None:
    """A failure posts one kind sentence without the technical reason; the goodbye after it is not posted."""
    interaction = await running_in(bot, cog, tree)
    conversation = bot.conversations.get(interaction.guild.id)
    channel = conversation.voice_channel
    channel.send.reset_mock()
    await cog.on_failed(conversation, "Could not connect to Gemini after 3 tries (code 1011).")
    await cog.on_ended(conversation, ended(conversation, "Gemini Live failed: not reachable"))
    channel.send.assert_awaited_once()
    text = channel.send.await_args.args[0]
    assert text == ("😕 Sorry, the tutor can't talk right now. Ask a grown-up to check on it, then try "
                    "`/tutor start` again.")
    for word in ("Gemini", "1011", "code", "connect"):
        assert word not in text


async def test_a_refused_post_does_not_raise(bot, cog, tree) -> None:
    """Missing Send Messages in the voice chat is logged, never raised into the core."""
    interaction = await running_in(bot, cog, tree)
    conversation = bot.conversations.get(interaction.guild.id)
    conversation.voice_channel.send.side_effect = discord.Forbidden(MagicMock(status=403, reason="x"), "no")
    await cog.on_ended(conversation, ended(conversation))


@pytest.mark.parametrize(("seconds", "text"), [(0, "00:00"), (65.9, "01:05"), (3599, "59:59"), (3725, "1:02:05")])
def test_clock(seconds: float, text: str) -> None:
    """Durations read as mm:ss, with hours only when needed."""
    assert clock(seconds) == text


# ----- the test doubles themselves ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "start", "stop", "say", "add_observer", "remove_observer", "stop_all"])
def test_fake_conversations_matches_the_real_signatures(method: str) -> None:
    """The fake registry cannot drift from bot.tutor.Conversations: same parameters, same async-ness."""
    real, fake = getattr(Conversations, method), getattr(FakeConversations, method)
    assert list(inspect.signature(fake).parameters) == list(inspect.signature(real).parameters)
    assert inspect.iscoroutinefunction(fake) == inspect.iscoroutinefunction(real)


def test_discord_mocks_refuse_misspelt_attributes() -> None:
    """spec_set all the way down to response and followup: a typo raises instead of passing silently."""
    interaction = MockInteraction()
    for obj, typo in [(interaction, "gild"), (interaction.response, "send_mesage"), (interaction.followup, "sennd"),
                      (interaction.user, "voice_chanel"), (interaction.guild, "mee"), (MockVoiceChannel(), "sendd")]:
        with pytest.raises(AttributeError):
            getattr(obj, typo)
    assert isinstance(interaction, discord.Interaction) and isinstance(interaction.user, discord.Member)

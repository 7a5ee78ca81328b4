"""TutorBot (intents, start-up, shutdown), the extensions it loads, and TutorTree's error sentences."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from collections.abc import AsyncIterator
from unittest.mock import AsyncMock, MagicMock

import discord
import pytest
from discord import app_commands
from discord.ext import commands

import cogs
from bot.client import INITIAL_EXTENSIONS, STALE_COMMAND, TutorBot, TutorTree
from bot.errors import NotRunning, UnknownLevel
from bot.storage.db import Database
from bot.tutor import Conversations
from cogs.utils.checks import NotModerator
from tests.helpers import FakeConversations, MockInteraction, handle_error, make_bot, make_settings

DEV_GUILD = 424242


@pytest.fixture
async def db(tmp_path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "tutor.sqlite3")
    yield database
    await database.close()


def bot_over(db: Database, **settings) -> TutorBot:
    bot = TutorBot(settings=make_settings(**settings), db=db, conversations=lambda b: FakeConversations())
    bot.tree.sync = AsyncMock(return_value=[])  # the only HTTP call setup_hook makes
    return bot


# ----- construction --------------------------------------------------------------------------------


def test_intents_are_guilds_and_voice_states_only() -> None:
    """Least privilege: no members, presences or message content (no privileged intents at all)."""
    bot = make_bot()
    assert bot.intents == discord.Intents(guilds=True, voice_states=True)
    assert not (bot.intents.members or bot.intents.presences or bot.intents.message_content)


def test_bot_never_pings_and_has_no_text_commands() -> None:
    """Mentions are off by default and there is no help command (slash commands only)."""
    bot = make_bot()
    mentions = bot.allowed_mentions
    assert (mentions.everyone, mentions.users, mentions.roles, mentions.replied_user) == (False, False, False, False)
    assert bot.help_command is None
    assert bot.command_prefix is commands.when_mentioned


def test_tree_is_the_tutor_tree() -> None:
    """The single error handler is installed through tree_cls."""
    assert isinstance(make_bot().tree, TutorTree)


def test_default_registry_is_the_real_conversations() -> None:
    """Without an injected factory the bot builds the core's Conversations over its repository."""
    bot = TutorBot(settings=make_settings(), db=MagicMock())
    assert isinstance(bot.conversations, Conversations)


# ----- start-up and shutdown -------------------------------------------------------------------------


async def test_setup_hook_loads_the_cogs_and_syncs_to_the_dev_guild(db) -> None:
    """With DEV_GUILD_ID the global commands are copied to that guild and synced there, instantly."""
    bot = bot_over(db, dev_guild_id=DEV_GUILD)
    await bot.setup_hook()
    try:
        assert set(bot.extensions) == set(INITIAL_EXTENSIONS)
        bot.tree.sync.assert_awaited_once()
        assert bot.tree.sync.await_args.kwargs["guild"].id == DEV_GUILD
        copied = {c.name for c in bot.tree.get_commands(guild=discord.Object(id=DEV_GUILD))}
        assert "tutor" in copied
    finally:
        await bot.close()


async def test_setup_hook_syncs_globally_without_a_dev_guild(db) -> None:
    """Without DEV_GUILD_ID the tree is synced globally."""
    bot = bot_over(db)
    await bot.setup_hook()
    try:
        bot.tree.sync.assert_awaited_once_with()
    finally:
        await bot.close()


async def test_setup_hook_closes_sessions_a_crash_left_open(db) -> None:
    """A session still marked running from before a restart is ended with reason 'bot restarted'."""
    bot = bot_over(db)
    session_id = await bot.repository.start_session(1, 2, 3, "Kid", "space", 8)
    await bot.setup_hook()
    try:
        row = await bot.repository.get_session(1, session_id)
        assert row is not None and not row.is_running and row.end_reason == "bot restarted"
    finally:
        await bot.close()


async def test_close_stops_conversations_then_unloads_the_cogs(db) -> None:
    """Shutdown ends every conversation with a reason, unloads the extensions and closes the client."""
    bot = bot_over(db)
    await bot.setup_hook()
    await bot.close()
    assert bot.conversations.called("stop_all") == [("bot shutting down",)]
    assert not bot.extensions
    assert bot.is_closed()


async def test_close_still_closes_the_client_when_stopping_fails() -> None:
    """A failure while stopping conversations does not leave the gateway open."""
    bot = make_bot()
    bot.conversations.fail["stop_all"] = RuntimeError("voice stuck")
    with pytest.raises(RuntimeError):
        await bot.close()
    assert bot.is_closed()


async def test_on_ready_logs_the_guild_count(caplog) -> None:
    """`bot.ready` is logged with how many guilds the bot is in."""
    bot = make_bot()
    with caplog.at_level(logging.INFO, logger="bot.client"):
        await bot.on_ready()
    [record] = [r for r in caplog.records if r.getMessage() == "bot.ready"]
    assert record.guild_count == 0


# ----- every extension ------------------------------------------------------------------------------


def discover_extensions() -> set[str]:
    """Every public module or package directly under cogs/ that defines `setup` (pydis's walk_extensions)."""
    found = set()
    for module in pkgutil.iter_modules(cogs.__path__, prefix="cogs."):
        if module.name.rpartition(".")[2].startswith("_"):
            continue
        if hasattr(importlib.import_module(module.name), "setup"):
            found.add(module.name)
    return found


def test_every_extension_is_loaded_at_start_up() -> None:
    """INITIAL_EXTENSIONS lists exactly the extensions that exist under cogs/."""
    assert discover_extensions() == set(INITIAL_EXTENSIONS)


async def test_all_extensions_load_together_without_duplicate_command_names(db) -> None:
    """Loading every extension into one tree works (discord.py refuses a duplicate top-level name)."""
    bot = bot_over(db)
    try:
        for extension in sorted(discover_extensions()):
            await bot.load_extension(extension)
        names = [c.name for c in bot.tree.get_commands()]
        assert len(names) == len(set(names))
        tutor = bot.tree.get_command("tutor")
        assert {c.name for c in tutor.commands} == {"start", "stop", "status", "say", "name"}
        for command in bot.tree.walk_commands():
            assert command.description and command.description != "…", command.qualified_name
    finally:
        await bot.close()


async def test_every_command_and_option_has_help_that_fits(db) -> None:
    """Every command, group and option says what it is for, and none is cut: discord.py silently shortens an
    option's help past Discord's 100 characters (ending it in "…"), so a moderator would read half a sentence."""
    bot = bot_over(db)
    try:
        for extension in sorted(discover_extensions()):
            await bot.load_extension(extension)
        for command in bot.tree.walk_commands():
            name = command.qualified_name
            described = command.description
            assert described and not described.endswith("…") and len(described) <= 100, name
            if isinstance(command, app_commands.Group):
                continue
            for option in command.parameters:
                described = option.description
                assert described and described != "…" and not described.endswith("…"), f"{name} {option.name}"
                assert len(described) <= 100, f"{name} {option.name}"
    finally:
        await bot.close()


async def test_a_duplicate_command_name_is_refused(db) -> None:
    """The duplicate check can fail: a second cog with a /tutor group is rejected."""

    class Impostor(commands.Cog):
        tutor = app_commands.Group(name="tutor", description="another tutor")

    bot = bot_over(db)
    try:
        await bot.load_extension("cogs.tutor")
        with pytest.raises(app_commands.CommandAlreadyRegistered):
            await bot.add_cog(Impostor())
    finally:
        await bot.close()


# ----- the error handler -----------------------------------------------------------------------------


@pytest.fixture
def tree() -> TutorTree:
    return make_bot().tree


async def _probe(interaction: discord.Interaction) -> None:
    """A command for the handler to name."""


probe = app_commands.Command(name="probe", description="probe", callback=_probe)


async def test_tutor_errors_are_sent_as_their_sentence(tree) -> None:
    """A TutorError raised in a callback (wrapped by discord.py) reaches the user as str(error), ephemerally."""
    reply = await handle_error(tree, MockInteraction(), UnknownLevel("lava"))
    assert reply.content == str(UnknownLevel("lava")) and reply.ephemeral


async def test_check_failures_are_sent_as_their_sentence(tree) -> None:
    """Our CheckFailure subclasses carry the user's sentence."""
    reply = await handle_error(tree, MockInteraction(), NotModerator())
    assert reply.content == str(NotModerator()) and reply.ephemeral


async def test_a_bare_check_failure_gets_a_plain_sentence(tree) -> None:
    """discord.py's generic 'the check functions failed' is replaced by a readable sentence."""
    reply = await handle_error(tree, MockInteraction(), app_commands.CheckFailure("The check functions failed."))
    assert reply.content == "You can't use this command here."


async def test_cooldown_says_when_to_try_again(tree) -> None:
    """CommandOnCooldown (itself a CheckFailure) says how many seconds to wait, rounded up."""
    error = app_commands.CommandOnCooldown(app_commands.Cooldown(1, 10), retry_after=2.2)
    reply = await handle_error(tree, MockInteraction(), error)
    assert reply.content == "Slow down a little — try again in 3 seconds."


async def test_a_bad_argument_gets_a_clear_sentence(tree) -> None:
    """A TransformerError names the value that could not be understood."""
    transformer = app_commands.transformers.IdentityTransformer(discord.AppCommandOptionType.integer)
    error = app_commands.TransformerError("eight", discord.AppCommandOptionType.integer, transformer)
    reply = await handle_error(tree, MockInteraction(), error)
    assert reply.content == "I couldn't understand “eight”: pick a value from the list, or check what you typed."


async def test_a_transformer_raising_a_tutor_error_shows_that_sentence(tree) -> None:
    """discord.py wraps a transformer's TutorError in TransformerError; the user still reads our sentence."""
    transformer = app_commands.transformers.IdentityTransformer(discord.AppCommandOptionType.string)
    error = app_commands.TransformerError("lava", discord.AppCommandOptionType.string, transformer)
    error.__cause__ = UnknownLevel("lava")
    reply = await handle_error(tree, MockInteraction(), error)
    assert reply.content == str(UnknownLevel("lava"))


async def test_unexpected_errors_get_a_reference_that_is_logged(tree, caplog) -> None:
    """A bug: a generic apology with an 8-hex reference, logged at ERROR with the traceback and tags."""
    interaction = MockInteraction()
    with caplog.at_level(logging.ERROR, logger="bot.client"):
        reply = await handle_error(tree, interaction, KeyError("boom"), command=probe)

    match = re.fullmatch(r"Oops — something went wrong on my side\. Please try again in a moment; if it keeps "
                         r"happening, tell a grown-up \(code ([0-9a-f]{8})\)\.", reply.content)
    assert match and reply.ephemeral and "log" not in reply.content
    [record] = [r for r in caplog.records if r.getMessage() == "command.failed"]
    assert record.reference == match.group(1)
    assert (record.guild_id, record.user_id, record.command) == (interaction.guild_id, interaction.user.id, "probe")
    assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)


async def test_two_unexpected_errors_get_different_references(tree) -> None:
    """Each report has its own reference so a moderator can find the right log line."""
    first = await handle_error(tree, MockInteraction(), RuntimeError("a"))
    second = await handle_error(tree, MockInteraction(), RuntimeError("b"))
    assert first.content != second.content


async def test_a_deferred_interaction_is_answered_through_the_followup(tree) -> None:
    """After a defer the sentence goes to followup.send, still ephemeral."""
    interaction = MockInteraction()
    await interaction.response.defer(ephemeral=True, thinking=True)
    await handle_error(tree, interaction, NotRunning())
    interaction.followup.send.assert_awaited_once_with(str(NotRunning()), ephemeral=True)
    interaction.response.send_message.assert_not_called()


async def test_an_expired_interaction_is_not_an_error(tree, caplog) -> None:
    """If Discord refuses the reply (interaction expired) the handler logs a warning and returns."""
    interaction = MockInteraction()
    interaction.response.send_message.side_effect = discord.NotFound(MagicMock(status=404, reason="x"), "gone")
    with caplog.at_level(logging.WARNING, logger="bot.client"):
        await tree.on_error(interaction, app_commands.CommandInvokeError(MagicMock(), NotRunning()))
    assert any(r.getMessage() == "command.reply_failed" for r in caplog.records)


@pytest.mark.parametrize("error", [app_commands.CommandNotFound("tutor start", []),
                                   app_commands.CommandSignatureMismatch(probe)])
async def test_a_command_discord_still_shows_but_the_bot_no_longer_has_gets_a_plain_sentence(tree, caplog, error):
    """After an update (or commands published to DEV_GUILD_ID and globally) Discord may send a command or
    options the bot no longer has: the person is told to pick it again, the operator gets a warning, and no
    moderator alert calls it a bug."""
    interaction = MockInteraction()
    with caplog.at_level(logging.WARNING, logger="bot.client"):
        reply = await handle_error(tree, interaction, error)
    assert reply.content == STALE_COMMAND and reply.ephemeral
    assert [r.getMessage() for r in caplog.records] == ["command.stale"]
    interaction.client.dispatch.assert_not_called()


async def test_an_unexpected_error_without_a_command_is_named_in_words_in_the_alert(tree) -> None:
    """The moderators' alert for a bug names the command, or says "A command" (never "/None")."""
    interaction = MockInteraction()
    await handle_error(tree, interaction, RuntimeError("boom"))
    event, _, alert = interaction.client.dispatch.call_args.args
    assert event == "tutor_problem" and alert.startswith("A command failed unexpectedly (code ")
    await handle_error(tree, interaction, RuntimeError("boom"), command=probe)
    assert interaction.client.dispatch.call_args.args[2].startswith("`/probe` failed unexpectedly")

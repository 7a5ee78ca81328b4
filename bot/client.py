"""`TutorBot`, the Discord client, and `TutorTree`, the one place app-command errors become sentences.

Process concerns (settings, logging, opening the database) live in `bot.__main__`; this module only
knows the gateway and the command tree. Dependencies are constructor arguments so tests build a real
`TutorBot` with a fake conversation registry and never touch the network.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import endings
from bot.errors import TutorError
from bot.storage.repository import Repository
from bot.tutor import Conversations

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.storage.db import Database

log = logging.getLogger(__name__)

# Loaded in this order by setup_hook; a cog that fails to load stops start-up (see setup_hook).
INITIAL_EXTENSIONS: tuple[str, ...] = ("cogs.tutor", "cogs.moderation")

UNEXPECTED_ERROR = ("Oops — something went wrong on my side. Please try again in a moment; if it keeps happening, "
                    "tell a grown-up (code {reference}).")
# Posted to the moderators' alerts channel (event `tutor_problem`, see cogs/moderation) with the same code.
UNEXPECTED_ALERT = ("{command} failed unexpectedly (code {reference}). Whoever runs the bot can find the details "
                    "in its log by searching for that code.")
# Discord still shows a command (or its old options) that this bot no longer has: an update, or commands
# published both to DEV_GUILD_ID and globally. Nothing is wrong with what the person did.
STALE_COMMAND = ("That command has just changed. Type / again and pick it from the list (if it looks the same, "
                 "wait a minute and try again).")

ConversationsFactory = Callable[["TutorBot"], Conversations]


def default_conversations(bot: TutorBot) -> Conversations:
    """The real registry: real voice connections and real Gemini Live sessions."""
    return Conversations(settings=bot.settings, repository=bot.repository)


class TutorTree(app_commands.CommandTree["TutorBot"]):
    """The command tree with the bot's single app-command error handler."""

    async def on_error(self, interaction: discord.Interaction[TutorBot], error: app_commands.AppCommandError,
                       /) -> None:
        """Answer the user with one ephemeral sentence; log what was not expected.

        `CommandInvokeError` is unwrapped once, then the first match wins:
        1. `TutorError` (bot/errors.py): its message — the core's expected failures.
        2. `CommandOnCooldown`: when to try again (it is a `CheckFailure`, so it comes first); a command
           Discord still lists but this bot no longer has as such (`CommandNotFound`, `CommandSignatureMismatch`).
        3. `CheckFailure` (cogs/utils/checks.py and discord.py's own): its message.
        4. `TransformerError`: the wrapped `TutorError`'s message if a transformer raised one, else a plain
           "couldn't understand that value" sentence.
        5. Anything else: a generic apology with a short reference id, logged with the traceback.
        """
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        message = self.describe(original)
        if message is None:
            message = self.report_unexpected(interaction, original)
        elif isinstance(original, TutorError) and original.detail:
            self.report_detail(interaction, original.detail)
        elif message is STALE_COMMAND:  # for the operator: the published commands and the code disagree
            log.warning("command.stale", extra={"guild_id": interaction.guild_id, "error": str(original)})
        await send_ephemeral(interaction, message)

    @staticmethod
    def report_detail(interaction: discord.Interaction[TutorBot], detail: str) -> None:
        """The technical side of a kind refusal: to the log and the moderators' alerts channel."""
        command = interaction.command.qualified_name if interaction.command is not None else None
        log.warning("command.refused", extra={"command": command, "guild_id": interaction.guild_id,
                                              "detail": detail})
        if interaction.guild_id is not None:
            interaction.client.dispatch("tutor_problem", interaction.guild_id, detail)

    @staticmethod
    def describe(error: BaseException) -> str | None:
        """The user's sentence for an expected error, or None when the error is a bug."""
        if isinstance(error, TutorError):
            return str(error)
        if isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
            return STALE_COMMAND
        if isinstance(error, app_commands.CommandOnCooldown):
            seconds = math.ceil(error.retry_after)
            return f"Slow down a little — try again in {seconds} second{'s' if seconds != 1 else ''}."
        if isinstance(error, app_commands.CheckFailure):
            return str(error) if type(error) is not app_commands.CheckFailure else "You can't use this command here."
        if isinstance(error, app_commands.TransformerError):
            if isinstance(error.__cause__, TutorError):
                return str(error.__cause__)
            value = discord.utils.escape_markdown(str(error.value))[:50]
            return f"I couldn't understand “{value}”: pick a value from the list, or check what you typed."
        return None

    @staticmethod
    def report_unexpected(interaction: discord.Interaction[TutorBot], error: BaseException) -> str:
        """Log a bug with a reference the user can quote; no message content or names in the log line."""
        reference = secrets.token_hex(4)
        command = interaction.command.qualified_name if interaction.command is not None else None
        log.error("command.failed", exc_info=error, extra={
            "reference": reference, "command": command, "guild_id": interaction.guild_id,
            "user_id": interaction.user.id if interaction.user is not None else None,
        })
        if interaction.guild_id is not None:
            interaction.client.dispatch("tutor_problem", interaction.guild_id, UNEXPECTED_ALERT.format(
                command=f"`/{command}`" if command else "A command", reference=reference))
        return UNEXPECTED_ERROR.format(reference=reference)


async def send_ephemeral(interaction: discord.Interaction, message: str) -> None:
    """Reply privately, whether or not the interaction was already answered or deferred."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)
    except discord.HTTPException:  # the interaction expired (15 min) or Discord is down: nothing left to tell
        log.warning("command.reply_failed", extra={"guild_id": interaction.guild_id})


class TutorBot(commands.AutoShardedBot):
    """Slash commands only; hears voice, never reads messages.

    Sharded the way large bots are (RoboDanny too): `SHARD_COUNT`/`SHARD_IDS` say which shards this process
    runs; unset, Discord picks the count and every shard runs here. Conversations are per guild and a guild
    lives on one shard, so processes share nothing but the database (see `bot.shards`).
    """

    def __init__(self, *, settings: Settings, db: Database,
                 conversations: ConversationsFactory = default_conversations) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # channels, roles and permissions
        intents.voice_states = True  # who is in which voice channel (the voice connection needs it too)
        super().__init__(
            command_prefix=commands.when_mentioned,  # no text commands; the prefix is never used
            intents=intents,
            tree_cls=TutorTree,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),  # kid-typed text never pings anyone
            shard_count=settings.shard_count,
            shard_ids=list(settings.shard_scope.ids) if settings.shard_scope.ids is not None else None,
        )
        self.settings = settings
        self.db = db
        self.shard_scope = settings.shard_scope
        # Plain object construction, no I/O: done here so the attributes always exist (close() and MockBot).
        self.repository = Repository(db, shards=self.shard_scope)
        self.conversations = conversations(self)

    async def setup_hook(self) -> None:
        """Tidy what a crash left behind, load the cogs, publish the commands.

        A cog that fails to load stops start-up (unlike RoboDanny, which logs and carries on): a tutor
        whose moderators cannot read transcripts must not run.
        """
        closed = await self.repository.close_dangling_sessions(endings.RESTARTED)
        log.info("bot.setup", extra={"dangling_sessions_closed": closed, "shards": self.shard_scope.describe(),
                                     "database": self.db.location})
        for extension in INITIAL_EXTENSIONS:
            await self.load_extension(extension)
        if self.syncs_commands:
            await self.sync_commands()

    @property
    def syncs_commands(self) -> bool:
        """Publishing the slash commands is global, so one process does it: the one running shard 0."""
        scope = self.shard_scope
        return scope.everything or 0 in (scope.ids or ())

    async def sync_commands(self) -> None:
        """To the dev guild instantly when `DEV_GUILD_ID` is set; otherwise globally (up to an hour to show)."""
        if self.settings.dev_guild_id is not None:
            guild = discord.Object(id=self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info("bot.commands_synced", extra={"count": len(synced), "guild_id": self.settings.dev_guild_id})

    async def on_ready(self) -> None:
        log.info("bot.ready", extra={"guild_count": len(self.guilds), "user_id": self.user.id if self.user else None,
                                     "shards": self.shard_scope.describe()})

    async def close(self) -> None:
        """Release in reverse order: conversations (voice + Live), then the cogs' tasks, then the gateway.

        The goodbyes still reach Discord because the gateway closes last; the database is `__main__`'s to close.
        """
        try:
            await self.conversations.stop_all(endings.SHUTTING_DOWN)
        finally:
            try:
                await self.unload_extensions()
            finally:
                if not isinstance(self.loop, asyncio.AbstractEventLoop):
                    # Never logged in (tests, a start that failed first): AutoShardedClient.close() needs the
                    # event queue that login's set-up creates; there are no shards to close yet.
                    await self._async_setup_hook()
                await super().close()

    async def unload_extensions(self) -> None:
        """Unload in reverse load order so each cog's `cog_unload` cancels the work its `cog_load` started."""
        for extension in reversed(list(self.extensions)):
            try:
                await self.unload_extension(extension)
            except Exception:
                log.exception("bot.unload_failed", extra={"extension": extension})

"""`/transcripts list|show|export|flagged|summarize|delete …` for moderators.

Every lookup goes through the repository with `interaction.guild_id`, so another server's session id
answers exactly like a missing one (`bot.errors.NotFound`). The cog also owns the moderation side jobs:
the alerts observer and the hourly retention purge, started in `cog_load` and stopped in `cog_unload`.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import BadOption, NotFound, SessionStillRunning
from bot.levels import BUILTIN_LEVELS
from bot.retention import RetentionTask
from bot.storage.models import ErasureReport, EventRow, SessionRow, TurnRow, UsageTotals
from bot.summary import SessionSummarizer
from cogs.moderation._alerts import ModerationAlerts
from cogs.moderation._views import ConfirmView
from cogs.utils.checks import MODERATOR_PERMISSIONS, is_moderator_quietly, moderator_only
from cogs.utils.formatting import (
    ServerView,
    clean,
    flagged_pages,
    format_duration,
    own_topic_titles,
    render_json,
    render_txt,
    server_view,
    session_list_pages,
    transcript_pages,
)
from cogs.utils.paginator import Paginator

if TYPE_CHECKING:
    from bot.client import TutorBot

MAX_SESSION_ID = 2**53 - 1  # Discord's largest integer option
LIST_LIMIT = 200
FLAGGED_LIMIT = 200
SessionId = app_commands.Range[int, 1, MAX_SESSION_ID]
Days = app_commands.Range[int, 1, 365]


def check_days(days: int | None) -> int | None:
    """1–365 or None; anything else is refused before any query runs."""
    if days is not None and not 1 <= days <= 365:
        raise BadOption(f"`days` must be between 1 and 365 (got {days}).")
    return days


def since(days: int | None) -> datetime | None:
    return None if days is None else datetime.now(UTC) - timedelta(days=days)


def kept_note(report: ErasureReport) -> str:
    """What a member delete left in sessions that have not ended (never cut into), so the report stays true."""
    kept = ([f"{report.kept_turns} turn(s) they spoke or typed in"] if report.kept_turns else []) + (
        [f"{report.kept_sessions} session(s) they started"] if report.kept_sessions else [])
    return (f" Kept, because the session has not ended yet: {' and '.join(kept)}. Delete again once it has ended."
            if kept else "")


def session_choice(session: SessionRow, view: ServerView) -> app_commands.Choice[int]:
    """`#42 · 2026-11-25 16:00 Europe/London · Space and the planets · Alex` (Discord allows 100 characters)."""
    name = f"#{session.id} · {view.when(session.started_at)} · {view.topic(session.level)} · {session.starter_name}"
    return app_commands.Choice(name=name[:100], value=session.id)


@app_commands.guild_only()
@app_commands.default_permissions(MODERATOR_PERMISSIONS)
class Transcripts(commands.GroupCog, group_name="transcripts",
                  group_description="Read, export and delete tutor transcripts (moderators)"):
    """Moderator access to what was said."""

    delete = app_commands.Group(name="delete", description="Delete transcripts for good (moderators)")

    def __init__(self, bot: TutorBot) -> None:
        self.bot = bot
        self.summarizer = SessionSummarizer(bot.settings, bot.repository)
        self.alerts = ModerationAlerts(bot, self.summarizer)
        self.retention = RetentionTask(bot.repository, after_pass=self.alerts.remove_all_stale_posts)
        super().__init__()

    async def cog_load(self) -> None:
        self.bot.conversations.add_observer(self.alerts)
        self.alerts.retry_pending_summaries()
        self.retention.start()

    @commands.Cog.listener()
    async def on_tutor_problem(self, guild_id: int, detail: str) -> None:
        """The tree's error handler told a kid something kindly; the moderators get the technical side."""
        self.alerts.on_problem(guild_id, detail)

    async def cog_unload(self) -> None:
        self.bot.conversations.remove_observer(self.alerts)
        await self.retention.aclose()
        await self.alerts.aclose()

    # ----- helpers --------------------------------------------------------------------------------

    async def _session(self, interaction: discord.Interaction, session_id: int) -> SessionRow:
        """This guild's session or NotFound — the same answer for a missing id and another guild's."""
        assert interaction.guild_id is not None  # guaranteed by moderator_only()
        session = await self.bot.repository.get_session(interaction.guild_id, session_id)
        if session is None:
            raise NotFound("session")
        return session

    async def _contents(self, row: SessionRow) -> tuple[list[TurnRow], list[EventRow], UsageTotals]:
        """A session's turns, events (tool calls, alerts, budget stops) and summed usage, read in its guild."""
        repository = self.bot.repository
        return (await repository.get_turns(row.guild_id, row.id), await repository.session_events(row.guild_id, row.id),
                await repository.session_usage(row.guild_id, row.id))

    def _is_running_here(self, guild_id: int, session_id: int) -> bool:
        conversation = self.bot.conversations.get(guild_id)
        return conversation is not None and conversation.session_id == session_id

    async def session_autocomplete(self, interaction: discord.Interaction,
                                   current: str) -> list[app_commands.Choice[int]]:
        """This guild's sessions only, newest first, matching id, starter or topic; nothing for non-moderators."""
        if not await is_moderator_quietly(interaction):
            return []
        sessions = await self.bot.repository.search_sessions(interaction.guild_id, current[:50], limit=25)
        view = await server_view(self.bot.repository, interaction.guild_id)
        return [session_choice(session, view) for session in sessions]

    async def topic_autocomplete(self, interaction: discord.Interaction,
                                 current: str) -> list[app_commands.Choice[str]]:
        """Built-in and this guild's own topics, shown by title."""
        titles = {name: level.title for name, level in BUILTIN_LEVELS.items()}
        if interaction.guild_id is not None:
            titles |= own_topic_titles(await self.bot.repository.list_custom_levels(interaction.guild_id))
        needle = current.casefold().strip()
        return [app_commands.Choice(name=title[:100], value=name) for name, title in titles.items()
                if needle in title.casefold() or needle in name][:25]

    # ----- reading --------------------------------------------------------------------------------

    @app_commands.command(name="list", description="Recent tutor sessions, newest first")
    @app_commands.describe(member="Only sessions this member started or spoke in",
                           topic="Only sessions about this topic (start typing to see the list)",
                           days="Only sessions from the last this many days, 1 to 365 (leave empty for all)")
    @app_commands.autocomplete(topic=topic_autocomplete)
    @moderator_only()
    async def list_sessions(self, interaction: discord.Interaction, member: discord.User | None = None,
                            topic: str | None = None, days: Days | None = None) -> None:
        check_days(days)
        rows = await self.bot.repository.list_sessions(
            interaction.guild_id, member_id=member.id if member else None, level=topic or None,
            since=since(days), limit=LIST_LIMIT)
        view = await server_view(self.bot.repository, interaction.guild_id)
        await Paginator(session_list_pages(rows, view=view), owner_id=interaction.user.id).send(interaction)

    @app_commands.command(name="show", description="Read one session's transcript")
    @app_commands.describe(session="The session (type to search by number, who started it, or topic)")
    @app_commands.autocomplete(session=session_autocomplete)
    @moderator_only()
    async def show(self, interaction: discord.Interaction, session: SessionId) -> None:
        row = await self._session(interaction, session)
        turns, events, usage = await self._contents(row)
        view = await server_view(self.bot.repository, interaction.guild_id)
        await Paginator(transcript_pages(row, turns, view, events, usage),
                        owner_id=interaction.user.id).send(interaction)

    @app_commands.command(name="export", description="Download one session's transcript as a file")
    @app_commands.describe(session="The session to export",
                           format="txt: a text file to read; json: for spreadsheets and other tools")
    @app_commands.autocomplete(session=session_autocomplete)
    @moderator_only()
    async def export(self, interaction: discord.Interaction, session: SessionId,
                     format: Literal["txt", "json"] = "txt") -> None:
        row = await self._session(interaction, session)
        turns, events, usage = await self._contents(row)
        view = await server_view(self.bot.repository, interaction.guild_id)
        render = render_json if format == "json" else render_txt
        text = render(row, turns, view, events, usage)
        file = discord.File(io.BytesIO(text.encode("utf-8")), filename=f"tutor-session-{row.id}.{format}")
        await interaction.response.send_message(
            f"Transcript of session #{row.id} ({len(turns)} turns).", file=file, ephemeral=True)

    @app_commands.command(name="flagged", description="What the safety filter or the tutor flagged for a grown-up, "
                                                      "newest first")
    @app_commands.describe(days="Only the last this many days, 1 to 365 (leave empty for all)")
    @moderator_only()
    async def flagged(self, interaction: discord.Interaction, days: Days | None = None) -> None:
        check_days(days)
        turns = await self.bot.repository.flagged_turns(interaction.guild_id, since=since(days),
                                                        limit=FLAGGED_LIMIT)
        view = await server_view(self.bot.repository, interaction.guild_id)
        await Paginator(flagged_pages(turns, view), owner_id=interaction.user.id).send(interaction)

    @app_commands.command(name="summarize", description="Make (or remake) a finished session's summary")
    @app_commands.describe(session="The session to summarize")
    @app_commands.autocomplete(session=session_autocomplete)
    @moderator_only()
    async def summarize(self, interaction: discord.Interaction, session: SessionId) -> None:
        row = await self._session(interaction, session)
        if row.is_running or self._is_running_here(row.guild_id, row.id):
            raise SessionStillRunning("summarize")
        await interaction.response.defer(ephemeral=True, thinking=True)
        summary = await self.summarizer.summarize(row.guild_id, row.id)
        if summary is None:
            await interaction.followup.send("I couldn't make a summary right now (the transcript is safe). "
                                            "Try again in a few minutes.", ephemeral=True)
            return
        embed = discord.Embed(title=f"Summary of session #{row.id}", description=clean(summary),
                              colour=discord.Colour.green())
        await interaction.followup.send(embed=embed, ephemeral=True)

    # ----- deleting -------------------------------------------------------------------------------

    @delete.command(name="session", description="Delete one session and its whole transcript")
    @app_commands.describe(session="The session to delete")
    @app_commands.autocomplete(session=session_autocomplete)
    @moderator_only()
    async def delete_session(self, interaction: discord.Interaction, session: SessionId) -> None:
        row = await self._session(interaction, session)
        if row.is_running or self._is_running_here(row.guild_id, row.id):
            raise SessionStillRunning("delete")
        guild_id, session_id = row.guild_id, row.id

        async def do_delete() -> str:
            turns = await self.bot.repository.delete_session(guild_id, session_id)
            self.alerts.remove_stale_posts_soon(guild_id)  # its posts in the alerts channel go too
            return f"Deleted session #{session_id} and its {turns} turn(s)."

        view = await server_view(self.bot.repository, row.guild_id)
        question = (f"Delete session #{row.id} ({view.when(row.started_at)}, started by "
                    f"**{clean(row.starter_name)}**, {format_duration(row.duration())}) and its whole transcript? "
                    "This cannot be undone.")
        await self._ask(interaction, question, do_delete)

    @delete.command(name="member", description="Delete everything a member said or started")
    @app_commands.describe(member="The member whose transcripts should be forgotten")
    @moderator_only()
    async def delete_member(self, interaction: discord.Interaction, member: discord.User) -> None:
        guild_id, member_id = interaction.guild_id, member.id
        if self._takes_part_now(guild_id, member_id):
            raise SessionStillRunning("delete")
        names = [name for name in {member.name, member.global_name, member.display_name} if name]

        async def do_delete() -> str:
            # Asked up to a minute ago: the member may have started or joined a conversation since.
            if self._takes_part_now(guild_id, member_id):
                return (f"Nothing was deleted: {member.mention} is in the tutor conversation running now. "
                        "Stop it with `/tutor stop`, then delete again.")
            report = await self.bot.repository.delete_member_data(guild_id, member_id, names=names)
            if report.summaries:
                self.alerts.retry_pending_summaries()  # made again from what is left
            done = (f"Deleted {report.sessions} session(s) started by {member.mention} and {report.turns} turn(s) "
                    "in total: every turn they spoke or typed in (a turn shared with other kids goes whole) and the "
                    f"whole transcript of sessions they started. Their name was taken out of {report.labels} "
                    f"speaker label(s) and the words of {report.mentions} turn(s) that stay; {report.summaries} "
                    "summary(ies) that included them will be written again.")
            if report.posts:
                self.alerts.remove_stale_posts_soon(guild_id)
                done += (f" {report.posts} message(s) in the alerts channel that quoted what went are being "
                         "deleted too.")
            if report.events:
                done += (f" {report.events} note(s) of the tutor asking a grown-up for help, which may quote them, "
                         "went too.")
            return done + kept_note(report)

        question = (f"Delete every session {member.mention} started and every turn they spoke or typed in this "
                    "server (turns shared with other kids go whole)? This cannot be undone.")
        await self._ask(interaction, question, do_delete)

    def _takes_part_now(self, guild_id: int, member_id: int) -> bool:
        """The member started, is in, or has spoken or typed in this guild's conversation (running or still
        starting)."""
        return self.bot.conversations.involves(guild_id, member_id)

    async def _ask(self, interaction: discord.Interaction, question: str,
                   action: Callable[[], Awaitable[str]]) -> None:
        view = ConfirmView(owner_id=interaction.user.id, action=action)
        await interaction.response.send_message(question, view=view, ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())
        view.message = await interaction.original_response()

"""`/tutor-settings …`: who moderates, where alerts go, who may start, limits, retention, custom levels.

Ranges are declared twice on purpose: `app_commands.Range` makes Discord's picker refuse bad numbers,
and the repository re-validates (a client can bypass the picker). A refused value changes nothing and
is answered with one ephemeral sentence.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import timezones
from bot.cost import Compression, Prices, simulate_session
from bot.cost import dollars as format_dollars
from bot.errors import InvalidSetting
from bot.kid_names import clean_kid_name
from bot.levels import BUILTIN_LEVELS, custom_level, topic_title
from bot.storage.models import GuildSettings
from bot.storage.repository import SETTINGS_RANGES
from bot.turn_taking import DEFAULT_PAUSE_MS, PAUSE_RANGE_MS, YOUNGER_EXTRA_MS, YOUNGER_THAN, turn_pause_ms
from cogs.utils.checks import MODERATOR_PERMISSIONS, moderator_only
from cogs.utils.formatting import clean, own_topic_titles, truncate

if TYPE_CHECKING:
    from bot.client import TutorBot

log = logging.getLogger(__name__)

ALERT_PERMISSIONS = {"view_channel": "View Channel", "send_messages": "Send Messages", "embed_links": "Embed Links"}
UNITS = {"daily_minutes": "minutes a day", "max_session_minutes": "minutes per session",
         "retention_days": "days", "turn_pause_ms": "milliseconds"}
PAUSE_LOW, PAUSE_HIGH = (ms / 1000 for ms in PAUSE_RANGE_MS)
BUDGET_LOW, BUDGET_HIGH = (cents / 100 for cents in SETTINGS_RANGES["daily_budget_cents"])


def range_sentence(name: str, value: int) -> str:
    if name == "daily_budget_cents":
        return (f"`daily-budget` must be between {format_dollars(BUDGET_LOW)} and {format_dollars(BUDGET_HIGH)} a day "
                f"(got {format_dollars(value / 100)}). Nothing was changed.")
    if name == "turn_pause_ms":
        return (f"`turn-pause` must be between {PAUSE_LOW:g} and {PAUSE_HIGH:g} seconds (got {value / 1000:g}). "
                "Nothing was changed.")
    low, high = SETTINGS_RANGES[name]
    label = name.replace("_", "-")
    return f"`{label}` must be between {low} and {high} {UNITS[name]} (got {value}). Nothing was changed."


def moderator_role_problem(role: discord.Role) -> str | None:
    """Why `role` must not be the moderator role, or None. A misclick here would hand moderator power
    (reading every child's transcript, deleting them) to the whole server or to nobody who can be given it."""
    if role.is_default():
        return ("@everyone can't be the moderator role: every member, kids included, would become a moderator. "
                "Pick the parents' role instead. Nothing was changed.")
    if role.managed:
        return (f"{role.mention} belongs to a bot or an integration, so no person can be given it. "
                "Pick a role your moderators have. Nothing was changed.")
    top = role.guild.me.top_role
    if role.position >= top.position:
        return (f"{role.mention} is above my own highest role, so I can't be sure who may hand it out. Pick a "
                "role below mine (Server Settings → Roles), or move my role up first. Nothing was changed.")
    return None


def starter_role_problem(role: discord.Role) -> str | None:
    """Why `role` makes no sense as the starter role, or None."""
    if role.is_default():
        return ("@everyone is every member: to let everyone start the tutor, leave the role out, which clears "
                "the setting. Nothing was changed.")
    if role.managed:
        return (f"{role.mention} belongs to a bot or an integration, so no child can be given it. "
                "Pick a role the kids have. Nothing was changed.")
    return None


def _everyone_can_read(channel: discord.TextChannel) -> bool:
    """True when @everyone may view the channel (overwrites included)."""
    return channel.permissions_for(channel.guild.default_role).view_channel


def pause_words(setting_ms: int | None) -> str:
    """`1.2 s (1.7 s for children under 7), the default`."""
    older, younger = turn_pause_ms(setting_ms, YOUNGER_THAN), turn_pause_ms(setting_ms, YOUNGER_THAN - 1)
    return (f"{older / 1000:g} s ({younger / 1000:g} s for children under {YOUNGER_THAN})"
            + (", the default" if setting_ms is None else ""))


def settings_embed(guild: discord.Guild, settings: GuildSettings, topic_titles: list[str],
                   spent_today_usd: float = 0.0, kid_names: dict[int, str] | None = None) -> discord.Embed:
    """Every setting with its current value; unset ones say what that means."""

    def role(role_id: int | None, unset: str) -> str:
        return f"<@&{role_id}>" if role_id else unset

    embed = discord.Embed(title=f"Tutor settings for {guild.name}", colour=discord.Colour.blurple())
    embed.add_field(name="Moderator role", value=role(settings.moderator_role_id, "not set (Manage Server only)"))
    embed.add_field(name="Alerts channel",
                    value=f"<#{settings.alerts_channel_id}>" if settings.alerts_channel_id else "not set (no alerts)")
    embed.add_field(name="Starter role", value=role(settings.starter_role_id, "not set (everyone may start)"))
    embed.add_field(name="Tutor time per day", value=f"{settings.daily_minutes} minutes for the whole server, "
                                                     f"starting again {timezones.resets(settings.time_zone)}")
    embed.add_field(name="Longest conversation", value=f"{settings.max_session_minutes} minutes")
    embed.add_field(name="Money per day", value=f"{format_dollars(settings.daily_budget_usd)} for the whole server "
                                                f"({format_dollars(spent_today_usd)} spent today)")
    embed.add_field(name="Transcripts kept", value=f"{settings.retention_days} days")
    embed.add_field(name="Time zone", value=f"{timezones.label(settings.time_zone)} (when the day ends, and the "
                                            "times in transcripts)")
    embed.add_field(name="Pause that ends a child's turn", value=pause_words(settings.turn_pause_ms))
    topics = ", ".join(clean(title) for title in topic_titles) or "none yet (`/tutor-settings add-topic`)"
    embed.add_field(name="Your own topics", value=truncate(topics, 1000), inline=False)
    names = ", ".join(f"<@{member_id}> → {clean(name)}" for member_id, name in (kid_names or {}).items())
    embed.add_field(name="Names the tutor uses", value=truncate(names, 1000) if names else
                    "none yet (kids set theirs with `/tutor name`, or use `/tutor-settings kid-name`)", inline=False)
    return embed


@app_commands.guild_only()
@app_commands.default_permissions(MODERATOR_PERMISSIONS)
class TutorSettings(commands.GroupCog, group_name="tutor-settings",
                    group_description="Family controls for the voice tutor (moderators)"):
    """Per-server settings, stored by the repository."""

    def __init__(self, bot: TutorBot) -> None:
        self.bot = bot
        super().__init__()

    async def _update(self, interaction: discord.Interaction, done: str, **fields: int | str | None) -> None:
        try:
            await self.bot.repository.update_settings(interaction.guild_id, **fields)
        except ValueError as exc:
            (name, value), = fields.items()
            if name in SETTINGS_RANGES and isinstance(value, int):
                raise InvalidSetting(range_sentence(name, value)) from exc
            log.info("settings.refused", extra={"guild_id": interaction.guild_id, "field": name, "reason": str(exc)})
            raise InvalidSetting("That value can't be used here. Nothing was changed.") from exc
        await interaction.response.send_message(done, ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="show", description="Show this server's tutor settings")
    @moderator_only()
    async def show(self, interaction: discord.Interaction) -> None:
        settings = await self.bot.repository.get_settings(interaction.guild_id)
        titles = own_topic_titles(await self.bot.repository.list_custom_levels(interaction.guild_id))
        names = await self.bot.repository.member_names(interaction.guild_id)
        spent = (await self.bot.repository.usage_today(interaction.guild_id,
                                                       time_zone=settings.time_zone)).cost_usd
        await interaction.response.send_message(
            embed=settings_embed(interaction.guild, settings, list(titles.values()), spent, names), ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="moderator-role", description="Who besides Manage Server may moderate")
    @app_commands.describe(role="Members with this role can read transcripts and change these settings; "
                                "leave empty to clear it")
    @moderator_only()
    async def moderator_role(self, interaction: discord.Interaction, role: discord.Role | None = None) -> None:
        if role is not None and (problem := moderator_role_problem(role)):
            raise InvalidSetting(problem)
        done = f"Moderator role set to {role.mention}." if role else "Moderator role cleared: Manage Server only."
        await self._update(interaction, done, moderator_role_id=role.id if role else None)

    @app_commands.command(name="alerts-channel", description="Where flagged moments, problems and summaries go")
    @app_commands.describe(channel="A text channel only moderators can read; leave empty to turn alerts off",
                           everyone_can_read="Set to True only if you really want a channel every member can read")
    @app_commands.rename(everyone_can_read="everyone-can-read")
    @moderator_only()
    async def alerts_channel(self, interaction: discord.Interaction, channel: discord.TextChannel | None = None,
                             everyone_can_read: bool = False) -> None:
        if channel is not None:
            allowed = channel.permissions_for(channel.guild.me)
            missing = [label for name, label in ALERT_PERMISSIONS.items() if not getattr(allowed, name)]
            if missing:
                raise InvalidSetting(f"I can't post in {channel.mention}: I need {', '.join(missing)} there. "
                                     "Nothing was changed.")
            if not everyone_can_read and (readers := await self._kids_who_can_read(channel)):
                raise InvalidSetting(
                    f"{readers} can read {channel.mention}, and alerts quote what the kids said and summarise "
                    "their talks. Pick a channel only moderators can see, or run this again with "
                    "`everyone-can-read: True` if that is really what you want. Nothing was changed.")
        done = f"Alerts will be posted in {channel.mention}." if channel else "Alerts turned off."
        await self._update(interaction, done, alerts_channel_id=channel.id if channel else None)

    async def _kids_who_can_read(self, channel: discord.TextChannel) -> str | None:
        """Who of the kids could read alerts posted there: every member (@everyone), or everyone with the
        starter role (the role the kids have, when the server set one); None when neither can."""
        if _everyone_can_read(channel):
            return "Every member"
        settings = await self.bot.repository.get_settings(channel.guild.id)
        starter = channel.guild.get_role(settings.starter_role_id) if settings.starter_role_id else None
        if starter is not None and channel.permissions_for(starter).view_channel:
            return f"Everyone with the starter role **{discord.utils.escape_markdown(starter.name)}** (the kids' role)"
        return None

    @app_commands.command(name="starter-role", description="Only this role (and moderators) may start the tutor")
    @app_commands.describe(role="Only members with this role (and moderators) may use the tutor; leave empty so "
                                "everyone may")
    @moderator_only()
    async def starter_role(self, interaction: discord.Interaction, role: discord.Role | None = None) -> None:
        if role is not None and (problem := starter_role_problem(role)):
            raise InvalidSetting(problem)
        done = (f"Only {role.mention} and moderators can start the tutor now." if role
                else "Starter role cleared: everyone may start the tutor.")
        await self._update(interaction, done, starter_role_id=role.id if role else None)

    @app_commands.command(name="daily-minutes", description="How many minutes of tutor time the server gets each day")
    @app_commands.describe(minutes="1 to 1440 (default 60), for everyone together; the day ends at midnight in the "
                                   "server's time zone")
    @moderator_only()
    async def daily_minutes(self, interaction: discord.Interaction,
                            minutes: app_commands.Range[int, 1, 1440]) -> None:
        settings = await self.bot.repository.get_settings(interaction.guild_id)
        await self._update(interaction, f"The tutor can now talk for {minutes} minutes a day in this server; the "
                           f"time starts again {timezones.resets(settings.time_zone)}.", daily_minutes=minutes)

    @app_commands.command(name="daily-budget", description="Most this server may spend on the tutor per day (US$)")
    @app_commands.describe(dollars="0.10 to 1000 (default 5.00); at the limit the tutor says goodbye and new "
                                   "starts wait for tomorrow")
    @moderator_only()
    async def daily_budget(self, interaction: discord.Interaction,
                           dollars: app_commands.Range[float, BUDGET_LOW, BUDGET_HIGH]) -> None:
        cents = round(dollars * 100)
        settings = self.bot.settings
        typical = simulate_session(30, Compression(settings.gemini_compression_trigger_tokens,
                                                   settings.gemini_compression_target_tokens),
                                   Prices.from_settings(settings)).cost
        await self._update(interaction, f"The tutor can now spend up to {format_dollars(cents / 100)} a day in this "
                           f"server. A typical 30-minute conversation costs about {format_dollars(typical)}.",
                           daily_budget_cents=cents)

    @app_commands.command(name="max-session-minutes", description="How long one conversation may last")
    @app_commands.describe(minutes="1 to 240 (default 30); at the limit the tutor says goodbye and leaves")
    @moderator_only()
    async def max_session_minutes(self, interaction: discord.Interaction,
                                  minutes: app_commands.Range[int, 1, 240]) -> None:
        await self._update(interaction, f"Conversations now stop after {minutes} minutes.",
                           max_session_minutes=minutes)

    @app_commands.command(name="retention-days", description="How long transcripts are kept before they are deleted")
    @app_commands.describe(days="1 to 365 (default 30); older transcripts are deleted for good within the hour")
    @moderator_only()
    async def retention_days(self, interaction: discord.Interaction,
                             days: app_commands.Range[int, 1, 365]) -> None:
        await self._update(interaction, f"Transcripts are now kept for {days} days.", retention_days=days)

    @app_commands.command(name="turn-pause",
                          description="How long a pause ends a child's turn before the tutor answers")
    @app_commands.describe(seconds=f"{PAUSE_LOW:g} to {PAUSE_HIGH:g} (default {DEFAULT_PAUSE_MS / 1000:g}; children "
                                   f"under {YOUNGER_THAN} get {YOUNGER_EXTRA_MS / 1000:g} s more); leave empty for "
                                   "the default")
    @moderator_only()
    async def turn_pause(self, interaction: discord.Interaction,
                         seconds: app_commands.Range[float, PAUSE_LOW, PAUSE_HIGH] | None = None) -> None:
        setting = None if seconds is None else round(seconds * 1000)
        await self._update(interaction, f"A child's turn now ends after a pause of {pause_words(setting)}. "
                           "Longer lets children think mid-sentence; shorter answers sooner.", turn_pause_ms=setting)

    @app_commands.command(name="add-topic", description="Add a topic of your own for the tutor")
    @app_commands.describe(name="The topic's name as kids will see it: up to 40 letters, digits, spaces or dashes",
                           description="What the tutor should teach about it, in a few sentences (10 to 1000 "
                                       "characters)")
    @moderator_only()
    async def add_level(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 40],
                        description: app_commands.Range[str, 10, 1000]) -> None:
        try:
            level = custom_level(name, description)
        except ValueError as exc:
            raise InvalidSetting(f"{exc} Nothing was changed.") from exc
        if level.name in BUILTIN_LEVELS:
            raise InvalidSetting(f"“{BUILTIN_LEVELS[level.name].title}” is one of the built-in topics already. "
                                 "Pick another name.")
        added = await self.bot.repository.add_custom_level(interaction.guild_id, level.name, level.description,
                                                          interaction.user.id, title=level.title)
        if not added:
            raise InvalidSetting(f"This server already has a topic called “{clean(level.title)}”.")
        await interaction.response.send_message(f"Added the topic **{clean(level.title)}**: kids can pick it in "
                                                "`/tutor start` now.", ephemeral=True)

    async def custom_level_autocomplete(self, interaction: discord.Interaction,
                                        current: str) -> list[app_commands.Choice[str]]:
        """This guild's custom levels only."""
        if interaction.guild_id is None:
            return []
        titles = own_topic_titles(await self.bot.repository.list_custom_levels(interaction.guild_id))
        needle = current.casefold().strip()
        return [app_commands.Choice(name=title[:100], value=name) for name, title in titles.items()
                if needle in name or needle in title.casefold()][:25]

    @app_commands.command(name="remove-topic", description="Remove a topic this server added")
    @app_commands.describe(name="The topic to remove (start typing to see this server's own)")
    @app_commands.autocomplete(name=custom_level_autocomplete)
    @moderator_only()
    async def remove_level(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 40]) -> None:
        name = name.strip().lower().replace(" ", "-")  # the same slug add-topic stored
        titles = own_topic_titles(await self.bot.repository.list_custom_levels(interaction.guild_id))
        title = titles.get(name, topic_title(name))
        if not await self.bot.repository.remove_custom_level(interaction.guild_id, name):
            raise InvalidSetting(f"This server has no topic of its own called “{clean(title)}”.")
        await interaction.response.send_message(f"Removed the topic **{clean(title)}**.", ephemeral=True)

    async def time_zone_autocomplete(self, interaction: discord.Interaction,
                                     current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=name, value=name) for name in timezones.matching(current)]

    @app_commands.command(name="time-zone", description="When the server's day ends, and the time shown in "
                                                        "transcripts")
    @app_commands.describe(zone="A place such as Europe/London or America/New_York (type a city to search); "
                                "leave empty for UTC")
    @app_commands.autocomplete(zone=time_zone_autocomplete)
    @moderator_only()
    async def time_zone(self, interaction: discord.Interaction, zone: app_commands.Range[str, 1, 64] | None = None
                        ) -> None:
        name = zone.strip() if zone else None
        if name is not None and not timezones.is_known(name):
            raise InvalidSetting(f"“{clean(name[:64])}” is not a time zone I know. Start typing a city and pick one "
                                 "from the list. Nothing was changed.")
        stored = None if name in (None, timezones.DEFAULT) else name
        local_now = discord.utils.utcnow().astimezone(timezones.zone(stored))
        done = (f"The server's time zone is now {timezones.label(stored)} (it is {local_now:%H:%M} there). "
                f"The daily tutor time starts again {timezones.resets(stored)}, and transcripts show times in this "
                "zone.")
        await self._update(interaction, done, time_zone=stored)

    @app_commands.command(name="kid-name", description="Set the name the tutor calls a member (for a kid on a "
                                                       "parent's account)")
    @app_commands.describe(member="The member (the account the kid uses)",
                           name="What the tutor should call them; leave empty to use no name")
    @moderator_only()
    async def kid_name(self, interaction: discord.Interaction, member: discord.Member,
                       name: app_commands.Range[str, 1, 64] | None = None) -> None:
        guild_id = interaction.guild_id
        if name is None:
            await self.bot.repository.clear_member_name(guild_id, member.id)
            self.bot.conversations.rename(guild_id, member.id, None)
            done = f"Cleared: the tutor won't call {member.mention} by any name (and never by their display name)."
        else:
            chosen = clean_kid_name(name)
            await self.bot.repository.set_member_name(guild_id, member.id, chosen, set_by=interaction.user.id)
            self.bot.conversations.rename(guild_id, member.id, chosen)
            done = f"The tutor will call {member.mention} **{clean(chosen)}**, and transcripts will show that name."
        await interaction.response.send_message(done, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

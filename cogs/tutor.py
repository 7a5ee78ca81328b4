"""`/tutor start|stop|status|say`: parse and check the input, call one `Conversations` method, render the answer.

Replies to the person who ran a command are ephemeral (so a refusal never clutters the channel); what everyone
in the call should know — that the talk is transcribed, and when and why it ended — is posted in the voice
channel's own text chat. Errors are raised, never answered here: the tree's `on_error` (bot/client.py) turns
them into one ephemeral sentence.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cost import dollars
from bot.endings import CANT_TALK, farewell, talked_for
from bot.errors import BadOption, MissingVoicePermissions, NotInVoiceChannel, NotRunning, UnknownLevel
from bot.kid_names import clean_kid_name
from bot.languages import LANGUAGES, language_for
from bot.levels import BUILTIN_LEVELS, MAX_AGE, MIN_AGE, Level, custom_level, topic_title, validate_age
from bot.participants import STOP_RULE
from bot.tutor import SAY_LIMIT, ConversationResult, ConversationStatus, StartRequest
from cogs.utils.checks import can_start_tutor, can_stop_tutor, guild_only, is_moderator_quietly
from cogs.utils.formatting import cost_text

if TYPE_CHECKING:
    from bot.client import TutorBot
    from bot.storage.models import CustomLevel
    from bot.tutor import Conversation

log = logging.getLogger(__name__)

MAX_CHOICES = 25  # Discord's limit for autocomplete and choices
COLOUR = discord.Colour.teal()
LANGUAGE_CHOICES = [app_commands.Choice(name=lang.label, value=lang.code) for lang in LANGUAGES.values()][:MAX_CHOICES]

# What the bot needs in the caller's voice channel, with the names Discord's settings show.
# Send Messages is on the list because the transcription notice is not optional.
REQUIRED_VOICE_PERMISSIONS: tuple[tuple[str, str], ...] = (
    ("view_channel", "View Channel"),
    ("connect", "Connect"),
    ("speak", "Speak"),
    ("use_voice_activation", "Use Voice Activity"),
    ("send_messages", "Send Messages"),
)

TRANSCRIPT_NOTICE = (
    "🎙️ **The tutor has joined {channel}** to talk about **{topic}**. Say hi!\n"
    "The tutor is a computer helper, not a person, and grown-ups can read everything that is said.\n"
    "-# For grown-ups: the conversation is written down as text (no audio is kept) for this server's moderators. "
    "Started by {starter}; " + STOP_RULE + " can end it with `/tutor stop`."
)
NOTICE_NOT_POSTED = ("⚠️ I couldn't write in the voice channel's chat. Please tell everyone in the call that the "
                     "tutor is a computer helper and that grown-ups can read what is said.")


def missing_voice_permissions(permissions: discord.Permissions) -> list[str]:
    """The human names of the required permissions that `permissions` lacks, in a stable order."""
    return [label for flag, label in REQUIRED_VOICE_PERMISSIONS if not getattr(permissions, flag)]


def clock(seconds: float) -> str:
    """`mm:ss`, or `h:mm:ss` past an hour."""
    minutes, secs = divmod(max(0, int(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def level_from_custom(row: CustomLevel) -> Level:
    """A stored custom level as a `Level` titled as its moderator typed it; a row saved before validation existed
    is used as it is."""
    title = row.title or topic_title(row.name)
    try:
        return custom_level(row.name, row.description, title=title)
    except ValueError:
        return Level(row.name, title, row.description, builtin=False)


def matching_levels(levels: list[Level], typed: str) -> list[Level]:
    """Levels whose name or title contains what was typed (case-insensitive), at most 25."""
    needle = typed.strip().casefold()
    found = [lv for lv in levels if needle in lv.name.casefold() or needle in lv.title.casefold()]
    return found[:MAX_CHOICES]


def find_level(levels: list[Level], typed: str) -> Level:
    """The level picked from autocomplete (its name) or typed out in full (its title)."""
    needle = typed.strip().casefold()
    for level in levels:
        if needle in (level.name.casefold(), level.title.casefold()):
            return level
    raise UnknownLevel(typed)


def minutes_words(minutes: float) -> str:
    """"about 12 minutes", "less than a minute"."""
    whole = int(minutes)
    if whole < 1:
        return "less than a minute"
    return f"about {whole} minute{'s' if whole != 1 else ''}"


def started_embed(conversation: Conversation, request: StartRequest) -> discord.Embed:
    embed = discord.Embed(title="The tutor is on its way!", colour=COLOUR,
                          description=f"Joining {request.voice_channel.mention}. Say hi when you hear it!")
    embed.add_field(name="Topic", value=request.level.title)
    embed.add_field(name="Age", value=str(request.age))
    embed.add_field(name="Language", value=request.language.label)
    embed.add_field(name="Channel", value=request.voice_channel.mention)
    embed.set_footer(text=f"Session {conversation.session_id}")
    return embed


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def status_embed(status: ConversationStatus) -> discord.Embed:
    """What a kid cares about: the topic, who the tutor has heard, how long it's been, time left."""
    embed = discord.Embed(title=f"🎙️ Talking about: {status.level_title}", colour=COLOUR)
    embed.add_field(name="Where", value=f"<#{status.channel_id}>")
    speakers = ", ".join(discord.utils.escape_markdown(s) for s in status.speakers) or "nobody yet — say hi!"
    embed.add_field(name="The tutor has heard", value=speakers[:1024])
    embed.add_field(name="Talking for", value=minutes_words(status.uptime_s / 60).removeprefix("about "))
    embed.add_field(name="Time left", value=minutes_words(status.minutes_left))
    return embed


def moderator_status_embed(status: ConversationStatus) -> discord.Embed:
    """The connection figures, for moderators only (sent beside the kid view, still ephemeral)."""
    embed = discord.Embed(title="For moderators: how the connection is doing", colour=discord.Colour.dark_grey(),
                          timestamp=status.started_at)
    embed.add_field(name="Age", value=str(status.age))
    embed.add_field(name="Started by", value=discord.utils.escape_markdown(status.starter_name))
    embed.add_field(name="Running for", value=clock(status.uptime_s))
    embed.add_field(name="Turns", value=f"{status.turns} ({status.flagged_turns} flagged)")
    live = "connected" if status.live_connected else "reconnecting"
    embed.add_field(name="Gemini Live", value=f"{live}, {status.reconnects} reconnects")
    embed.add_field(name="Voice packets", value=f"{status.packets_received} received, {status.packets_dropped} "
                                                f"dropped, {status.packets_concealed} concealed")
    embed.add_field(name="Playback", value=f"{status.playback_buffered_ms:.0f} ms buffered, "
                                           f"{status.underruns} underruns")
    embed.add_field(name="Latency", value=f"input→Live {_ms(status.input_latency_ms)} (p95), "
                                          f"reply {_ms(status.reply_latency_ms)} (p50)")
    embed.add_field(name="Today", value=f"{status.minutes_used_today:.0f} of {status.daily_minutes} minutes used; "
                                        f"sessions stop after {status.max_session_minutes} minutes")
    embed.add_field(name="Cost", value=f"this session {cost_text(status.session_cost_usd, status.session_tokens)}; "
                                       f"today {dollars(status.spent_today_usd)} of {dollars(status.daily_budget_usd)}")
    embed.set_footer(text=f"Session {status.session_id} · started")
    return embed


class TutorCog(commands.Cog, name="Tutor"):
    """The kid-facing commands and the messages posted in the voice channel's chat."""

    tutor = app_commands.Group(name="tutor", description="Talk with the voice tutor, a computer helper",
                               guild_only=True)

    def __init__(self, bot: TutorBot) -> None:
        self.bot = bot
        self._failed_sessions: set[int] = set()

    async def cog_load(self) -> None:
        self.bot.conversations.add_observer(self)

    async def cog_unload(self) -> None:
        self.bot.conversations.remove_observer(self)

    async def levels_for(self, guild_id: int) -> list[Level]:
        """Built-in levels first, then this guild's own (a custom level never shadows a built-in name)."""
        custom = [level_from_custom(row) for row in await self.bot.repository.list_custom_levels(guild_id)]
        return list(BUILTIN_LEVELS.values()) + [lv for lv in custom if lv.name not in BUILTIN_LEVELS]

    # ----- commands --------------------------------------------------------------------------------

    @tutor.command(name="start", description="Start talking with the tutor in your voice channel")
    @app_commands.describe(level="The topic to talk about (start typing to see the list)",
                           age="How old the youngest child in the call is (4 to 14)",
                           language="The language the tutor speaks (English if you leave it out)")
    @app_commands.choices(language=LANGUAGE_CHOICES)
    @can_start_tutor()
    async def start(self, interaction: discord.Interaction[TutorBot], level: str,
                    age: app_commands.Range[int, MIN_AGE, MAX_AGE], language: str | None = None) -> None:
        """Validate everything first (nothing changes on bad input), then ask the core to start."""
        member = interaction.user
        assert isinstance(member, discord.Member) and interaction.guild is not None  # guaranteed by the check
        channel = member.voice.channel if member.voice is not None else None
        if channel is None:
            raise NotInVoiceChannel
        missing = missing_voice_permissions(channel.permissions_for(interaction.guild.me))
        if missing:
            raise MissingVoicePermissions(channel.name, missing)
        chosen = find_level(await self.levels_for(interaction.guild.id), level)
        validate_age(age)
        try:
            spoken = language_for(language)
        except ValueError:
            raise BadOption("Pick a language from the list (or leave it out for English).") from None

        await interaction.response.defer(ephemeral=True, thinking=True)
        request = StartRequest(guild_id=interaction.guild.id, voice_channel=channel, starter_id=member.id,
                               starter_name=member.display_name, level=chosen, age=age, language=spoken)
        conversation = await self.bot.conversations.start(request)
        notice_posted = await self._post(channel, TRANSCRIPT_NOTICE.format(
            channel=channel.mention, topic=chosen.title, starter=member.mention))
        await interaction.followup.send(None if notice_posted else NOTICE_NOT_POSTED,
                                        embed=started_embed(conversation, request), ephemeral=True)

    @start.autocomplete("level")
    async def level_autocomplete(self, interaction: discord.Interaction[TutorBot],
                                 current: str) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None:
            return []
        levels = matching_levels(await self.levels_for(interaction.guild_id), current)
        return [app_commands.Choice(name=lv.title[:100], value=lv.name) for lv in levels]

    @tutor.command(name="stop", description="Say goodbye to the tutor and end the conversation")
    @can_stop_tutor()
    async def stop(self, interaction: discord.Interaction[TutorBot]) -> None:
        assert interaction.guild_id is not None
        await interaction.response.defer(ephemeral=True, thinking=True)  # hanging up can take a few seconds
        result = await self.bot.conversations.stop(interaction.guild_id)
        await interaction.followup.send(f"The tutor has stopped. {talked_for(result.duration_s)}", ephemeral=True)

    @tutor.command(name="status", description="See what the tutor is talking about and how much time is left")
    @guild_only()
    async def status(self, interaction: discord.Interaction[TutorBot]) -> None:
        assert interaction.guild_id is not None
        conversation = self.bot.conversations.get(interaction.guild_id)
        if conversation is None:
            raise NotRunning
        status = conversation.status()
        embeds = [status_embed(status)]
        if await is_moderator_quietly(interaction):
            embeds.append(moderator_status_embed(status))
        await interaction.response.send_message(embeds=embeds, ephemeral=True)

    @tutor.command(name="say", description="Type something to the tutor (it answers out loud)")
    @app_commands.describe(text="What to tell the tutor")
    @guild_only()  # who may type is the core's rule: the people in the call (bot.participants.may_type)
    async def say(self, interaction: discord.Interaction[TutorBot],
                  text: app_commands.Range[str, 1, SAY_LIMIT]) -> None:
        assert interaction.guild_id is not None
        chosen = (await self.bot.repository.member_names(interaction.guild_id)).get(interaction.user.id)
        await self.bot.conversations.say(interaction.guild_id, interaction.user.id,
                                         chosen or interaction.user.display_name, text)
        await interaction.response.send_message("Sent! The tutor will answer out loud.", ephemeral=True)

    @tutor.command(name="name", description="Tell the tutor what to call you")
    @app_commands.describe(name="Your first name or nickname; leave it empty and the tutor won't use a name")
    @can_start_tutor()
    async def set_name(self, interaction: discord.Interaction[TutorBot],
                       name: app_commands.Range[str, 1, 64] | None = None) -> None:
        """The name the tutor and the transcript use for the caller (a kid on a parent's account, say)."""
        assert interaction.guild_id is not None
        member_id = interaction.user.id
        if name is None:
            await self.bot.repository.clear_member_name(interaction.guild_id, member_id)
            self.bot.conversations.rename(interaction.guild_id, member_id, None)
            reply = "OK! The tutor won't use a name for you."
        else:
            chosen = clean_kid_name(name)
            await self.bot.repository.set_member_name(interaction.guild_id, member_id, chosen, set_by=member_id)
            self.bot.conversations.rename(interaction.guild_id, member_id, chosen)
            reply = f"Got it! The tutor will call you **{discord.utils.escape_markdown(chosen)}**."
            if self.bot.conversations.get(interaction.guild_id) is not None:
                reply += " (In this call it may not know yet; it will next time you start it.)"
        await interaction.response.send_message(reply, ephemeral=True)

    # ----- ConversationObserver ----------------------------------------------------------------------

    async def on_failed(self, conversation: Conversation, reason: str) -> None:
        """Tell the kids kindly, without the technical reason (that goes to the alerts channel and the logs);
        the goodbye that follows (on_ended) is then skipped."""
        self._failed_sessions.add(conversation.session_id)
        await self._post(conversation.voice_channel, CANT_TALK)

    async def on_ended(self, conversation: Conversation, result: ConversationResult) -> None:
        if result.session_id in self._failed_sessions:
            self._failed_sessions.discard(result.session_id)
            return
        await self._post(conversation.voice_channel, farewell(result.reason, result.duration_s))

    async def _post(self, channel: discord.abc.Messageable, text: str) -> bool:
        """Post in a voice channel's chat; False (and a log line) when Discord refuses."""
        try:
            await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as exc:
            log.warning("tutor.post_failed", extra={"channel_id": getattr(channel, "id", None), "status": exc.status})
            return False
        return True


async def setup(bot: TutorBot) -> None:
    await bot.add_cog(TutorCog(bot))

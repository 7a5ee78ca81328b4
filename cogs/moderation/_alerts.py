"""Moderation alerts: flagged turns, failed conversations and end-of-session summaries, posted to the
guild's alerts channel when one is set.

Implements the core's `ConversationObserver`. `on_ended` is awaited inside `/tutor stop`, so the
summary is made in a background task this object owns (cancelled by `aclose`), never inline.

Deleting means deleting in the alerts channel too: each post that quotes a session is stored by message id
(`PostAbout`), erasing its words marks it stale, and `remove_stale_posts` deletes it from Discord — right after
a moderator's delete, and after every retention pass (which also retries a delete Discord refused).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot.endings import CANT_TALK
from bot.storage.models import AlertPostRow, EventRow, TurnRow, UsageTotals
from bot.summary import SessionSummarizer
from cogs.utils.formatting import (
    EXCERPT_LIMIT,
    FLAG_COLOUR,
    clean,
    cost_text,
    describe_flag,
    event_summary,
    speaker_label,
    truncate,
)

if TYPE_CHECKING:
    from bot.client import TutorBot
    from bot.tutor import Conversation, ConversationResult

log = logging.getLogger(__name__)

STALE_BATCH = 50  # stale posts read (and deleted one by one, as discord.py paces them) per round

WARN_COLOUR = discord.Colour.orange()
SUMMARY_COLOUR = discord.Colour.green()


@dataclass(frozen=True, slots=True)
class PostAbout:
    """What of a session a post quotes (`bot.storage.queries.posts`): deleted with it."""

    session_id: int
    kind: str  # 'flagged', 'alert' or 'summary'
    turn_id: int | None = None
    event_id: int | None = None


def view_command(session_id: int) -> str:
    """What a moderator types to read the whole transcript."""
    return f"`/transcripts show session:{session_id}`"


def _level_title(conversation: Conversation) -> str:
    return getattr(conversation.level, "title", None) or getattr(conversation.level, "name", "?")


def flagged_embed(conversation: Conversation, turn: TurnRow) -> discord.Embed:
    """The excerpt (cut), who said it, the level, the session and how to open it."""
    embed = discord.Embed(title="🚩 Something in a tutor conversation was flagged", colour=FLAG_COLOUR,
                          description=clean(truncate(turn.text, EXCERPT_LIMIT)) or "*(nothing was said aloud)*")
    embed.add_field(name="Said by", value=clean(speaker_label(turn)))
    embed.add_field(name="Topic", value=clean(_level_title(conversation)))
    embed.add_field(name="Session", value=f"#{conversation.session_id}")
    embed.add_field(name="Why", value=clean(truncate(describe_flag(turn.flag_reason or "safety"), 200)),
                    inline=False)
    embed.add_field(name="View it", value=view_command(conversation.session_id), inline=False)
    return embed


def alert_embed(conversation: Conversation, event: EventRow, turn: TurnRow | None) -> discord.Embed:
    """The tutor asked for a grown-up: why (category and its reason), what the child said, and where to look."""
    title, detail = event_summary(event)
    excerpt = clean(truncate(turn.text, EXCERPT_LIMIT)) if turn is not None and turn.text.strip() else None
    embed = discord.Embed(title=f"🔔 {title}", colour=FLAG_COLOUR,
                          description=excerpt or "*(the child's words were not transcribed)*")
    if turn is not None:
        embed.add_field(name="Speaker", value=clean(speaker_label(turn)))
    embed.add_field(name="Topic", value=clean(_level_title(conversation)))
    embed.add_field(name="Session", value=f"#{conversation.session_id}")
    embed.add_field(name="Why the tutor asked", value=clean(truncate(detail, 1000)) or "—", inline=False)
    embed.add_field(name="View it", value=view_command(conversation.session_id), inline=False)
    return embed


def failed_embed(conversation: Conversation, reason: str) -> discord.Embed:
    """A conversation stopped because something broke."""
    embed = discord.Embed(title="⚠️ A tutor conversation stopped unexpectedly", colour=WARN_COLOUR,
                          description=clean(truncate(reason, EXCERPT_LIMIT)))
    embed.add_field(name="What the kids saw", value=CANT_TALK, inline=False)
    embed.add_field(name="Topic", value=clean(_level_title(conversation)))
    embed.add_field(name="Session", value=f"#{conversation.session_id}")
    embed.add_field(name="View it", value=view_command(conversation.session_id), inline=False)
    return embed


def summary_embed(conversation: Conversation, result: ConversationResult, summary: str | None,
                  usage: UsageTotals | None = None) -> discord.Embed:
    """The after-session note, or a pointer to retry when no summary could be made."""
    minutes = max(1, round(result.duration_s / 60))
    if summary is not None:
        description = clean(summary)
    else:
        description = ("No summary could be made this time (the transcript is saved). "
                       f"Retry with `/transcripts summarize session:{result.session_id}`.")
    embed = discord.Embed(title=f"📝 Tutor session #{result.session_id} ended", colour=SUMMARY_COLOUR,
                          description=description)
    embed.add_field(name="Topic", value=clean(_level_title(conversation)))
    embed.add_field(name="Length", value=f"{minutes} min · {result.turns} turns")
    embed.add_field(name="Why it ended", value=clean(truncate(result.reason, 200)))
    if usage is not None:
        embed.add_field(name="Cost", value=cost_text(usage.cost_usd, usage.total_tokens))
    embed.add_field(name="View it", value=view_command(result.session_id), inline=False)
    return embed


def problem_embed(detail: str) -> discord.Embed:
    """A command was refused or failed for a technical reason; the kid was told kindly, this is the why."""
    return discord.Embed(title="⚠️ The tutor ran into a problem", colour=WARN_COLOUR,
                         description=clean(truncate(detail, EXCERPT_LIMIT)))


class ModerationAlerts:
    """A `ConversationObserver` that reports to moderators; safe to leave registered after `aclose`."""

    def __init__(self, bot: TutorBot, summarizer: SessionSummarizer) -> None:
        self._bot = bot
        self._summarizer = summarizer
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def alerts_channel(self, guild_id: int) -> discord.abc.Messageable | None:
        """The guild's configured alerts channel, if set and still a text channel of *that* guild."""
        settings = await self._bot.repository.get_settings(guild_id)
        if settings.alerts_channel_id is None:
            return None
        channel = self._bot.get_channel(settings.alerts_channel_id)
        if not isinstance(channel, discord.TextChannel | discord.Thread) or channel.guild.id != guild_id:
            log.warning("alerts.channel_missing", extra={"guild_id": guild_id,
                                                         "channel_id": settings.alerts_channel_id})
            return None
        return channel

    async def post(self, guild_id: int, embed: discord.Embed, about: PostAbout | None = None) -> bool:
        """Send to the alerts channel; False (and a log line) when unset or Discord refuses. Never raises.

        `about`: what of a session the post quotes. Its message id is stored, so erasing those words deletes
        the post too (`remove_stale_posts`)."""
        try:
            channel = await self.alerts_channel(guild_id)
            if channel is None:
                return False
            message = await channel.send(embed=embed, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as exc:
            log.warning("alerts.send_failed", extra={"guild_id": guild_id, "status": exc.status})
            return False
        except Exception:
            log.exception("alerts.post_failed", extra={"guild_id": guild_id})
            return False
        if about is not None:
            try:
                await self._bot.repository.add_alert_post(guild_id, about.session_id, channel.id, message.id,
                                                          about.kind, turn_id=about.turn_id, event_id=about.event_id)
                if await self._bot.repository.stale_alert_posts(guild_id, limit=1):  # erased while it was sent
                    self.remove_stale_posts_soon(guild_id)
            except Exception:
                log.exception("alerts.post_not_recorded", extra={"guild_id": guild_id, "message_id": message.id,
                                                                  "session_id": about.session_id})
        return True

    async def remove_stale_posts(self, guild_id: int) -> None:
        """Delete from Discord this guild's posts whose words were erased, each tried once (one Discord refuses
        stays stale, for the next retention pass, and never holds up the rest). Never raises."""
        after = 0
        try:
            while posts := await self._bot.repository.stale_alert_posts(guild_id, limit=STALE_BATCH, after=after):
                gone = [post.id for post in posts if await self._delete_post(post)]
                await self._bot.repository.forget_alert_posts(guild_id, gone)
                after = posts[-1].id
        except Exception:
            log.exception("alerts.posts_not_removed", extra={"guild_id": guild_id})

    def remove_stale_posts_soon(self, guild_id: int) -> None:
        """After an erasure: delete its posts in the background (Discord paces deletes; the moderator is
        answered at once)."""
        self._spawn(self.remove_stale_posts(guild_id), f"posts:{guild_id}")

    async def remove_all_stale_posts(self) -> None:
        """Every guild's (of this process's shards): after each retention pass, the first at start-up."""
        try:
            guilds = await self._bot.repository.guilds_with_stale_posts()
        except Exception:
            log.exception("alerts.posts_not_listed")
            return
        for guild_id in guilds:
            await self.remove_stale_posts(guild_id)

    async def _delete_post(self, post: AlertPostRow) -> bool:
        """True once the message is gone (deleted now, or already)."""
        tags = {"guild_id": post.guild_id, "channel_id": post.channel_id, "message_id": post.message_id}
        try:
            channel = self._bot.get_partial_messageable(post.channel_id, guild_id=post.guild_id)
            await channel.get_partial_message(post.message_id).delete()
        except discord.NotFound:  # deleted by hand, or with its channel
            pass
        except discord.HTTPException as exc:
            log.warning("alerts.post_delete_failed", extra={**tags, "status": exc.status})
            return False
        log.info("alerts.post_deleted", extra={**tags, "kind": post.kind})
        return True

    # The hooks run inside the conversation's own tasks (the flagged hook sits in the turn-writing path), so
    # each one only schedules its work: a slow or rate-limited Discord must never stall the audio loop.

    async def on_turn_flagged(self, conversation: Conversation, turn: TurnRow) -> None:
        about = PostAbout(conversation.session_id, "flagged", turn_id=turn.id)
        self._spawn(self.post(conversation.guild_id, flagged_embed(conversation, turn), about), f"alert:{turn.id}")

    async def on_alert(self, conversation: Conversation, event: EventRow, turn: TurnRow | None) -> None:
        """The tutor called alert_grown_up: posted like a flagged turn, with why it fired."""
        about = PostAbout(conversation.session_id, "alert", turn_id=turn.id if turn else None, event_id=event.id)
        self._spawn(self.post(conversation.guild_id, alert_embed(conversation, event, turn), about),
                    f"alert-tool:{event.id}")

    async def on_failed(self, conversation: Conversation, reason: str) -> None:
        self._spawn(self.post(conversation.guild_id, failed_embed(conversation, reason)),
                    f"alert-failed:{conversation.session_id}")

    def on_problem(self, guild_id: int, detail: str) -> None:
        """A command's technical failure (event `tutor_problem` from the tree's error handler)."""
        self._spawn(self.post(guild_id, problem_embed(detail)), f"alert-problem:{guild_id}")

    async def on_ended(self, conversation: Conversation, result: ConversationResult) -> None:
        """Summarise in the background so `/tutor stop` answers at once."""
        self._spawn(self._summarize_and_post(conversation, result), f"summary:{result.session_id}")

    def retry_pending_summaries(self) -> None:
        """At start-up: make the summaries a restart cut off (stored only; nobody is waiting for a post)."""
        self._spawn(self._retry_pending(), "summaries:pending")

    async def _retry_pending(self) -> None:
        for guild_id, session_id in await self._bot.repository.pending_summaries():
            await self._summarizer.summarize(guild_id, session_id)  # never raises; stores ok/unavailable

    def _spawn(self, work: Coroutine[Any, Any, object], name: str) -> None:
        """Run `work` as a task this object owns (kept until done, cancelled by `aclose`)."""
        if self._closed:
            work.close()
            return
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _summarize_and_post(self, conversation: Conversation, result: ConversationResult) -> None:
        try:
            summary = await self._summarizer.summarize(result.guild_id, result.session_id)
            usage = await self._bot.repository.session_usage(result.guild_id, result.session_id)
            await self.post(result.guild_id, summary_embed(conversation, result, summary, usage),
                            PostAbout(result.session_id, "summary"))
        except Exception:
            log.exception("alerts.summary_post_failed", extra={"guild_id": result.guild_id,
                                                                "session_id": result.session_id})

    async def wait_idle(self) -> None:
        """Wait for pending summaries (tests, and a graceful unload)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop reacting to events and cancel summaries still in flight."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

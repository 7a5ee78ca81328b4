"""Turn stored transcripts into things moderators read: embed pages and downloadable files.

Embeds have hard limits (4096 characters of description, 6000 in total, 25 fields); a long
conversation therefore becomes several pages, and a single very long turn is split across pages
rather than cut. Kid text is escaped so that a child saying `*` or `@everyone` renders as typed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import discord

from bot import timezones
from bot.cost import dollars
from bot.languages import DEFAULT_LANGUAGE, language_for
from bot.levels import topic_title
from bot.storage.models import CustomLevel, EventRow, SessionRow, SessionSummaryRow, TurnRow, UsageTotals
from bot.tools import ALERT_CATEGORIES, ALERT_GROWN_UP, END_CONVERSATION

if TYPE_CHECKING:
    from bot.storage.repository import Repository

DESCRIPTION_LIMIT = 4096
TOTAL_LIMIT = 6000
PAGE_BUDGET = 3800  # description budget per page: leaves room for title, footer and escaping slack
EXCERPT_LIMIT = 300
EMBED_COLOUR = discord.Colour.blurple()
FLAG_COLOUR = discord.Colour.red()


@dataclass(frozen=True, slots=True)
class ServerView:
    """What a server's own settings change in how things read: its topics' titles and its time zone."""

    titles: Mapping[str, str] = field(default_factory=dict)  # its own topics: name → title
    time_zone: str | None = None  # None is UTC

    def topic(self, name: str) -> str:
        return topic_title(name, self.titles)

    def when(self, moment: datetime) -> str:
        """`2026-11-25 16:00 Europe/London`."""
        return timezones.show(moment, self.time_zone)

    def clock(self, moment: datetime) -> str:
        """`16:04:12`, local to the server (the zone is named once per page, in the title)."""
        return moment.astimezone(timezones.zone(self.time_zone)).strftime("%H:%M:%S")


UTC_VIEW = ServerView()


def own_topic_titles(rows: Iterable[CustomLevel]) -> dict[str, str]:
    """A server's own topics, name → the title its moderator typed (or the name made readable, for old rows)."""
    return {row.name: row.title or topic_title(row.name) for row in rows}


async def server_view(repository: Repository, guild_id: int) -> ServerView:
    """This server's titles and time zone, read from storage (two small queries)."""
    settings = await repository.get_settings(guild_id)
    return ServerView(own_topic_titles(await repository.list_custom_levels(guild_id)), settings.time_zone)


def speaker_label(turn: TurnRow) -> str:
    """Who said it, as a moderator wants to read it."""
    if turn.role == "tutor":
        return "Tutor"
    if turn.role == "system":
        return "System"
    return turn.speaker_name or "A child"


def clean(text: str) -> str:
    """Text as typed/spoken, safe to put in an embed (no markdown, no pings)."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def truncate(text: str, limit: int = EXCERPT_LIMIT) -> str:
    """At most `limit` characters, ending in an ellipsis when cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def format_duration(duration: timedelta) -> str:
    """`1 h 05 min`, `12 min 30 s`, `45 s`."""
    seconds = int(duration.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


# Gemini Live's turn_complete_reason codes (google.genai.types.TurnCompleteReason) in a parent's words.
_CHILD_SAID = "the safety filter found something unsafe in what was said to the tutor"
_TUTOR_REPLY = "the safety filter stopped the tutor's reply"
FLAG_WORDS: dict[str, str] = {
    "PROHIBITED_INPUT_CONTENT": _CHILD_SAID, "INPUT_OTHER": _CHILD_SAID, "BLOCKLIST": _CHILD_SAID,
    "INPUT_TEXT_NCII_PROHIBITED": _CHILD_SAID, "INPUT_IP_PROHIBITED": _CHILD_SAID,
    "INPUT_TEXT_CONTAIN_PROMINENT_PERSON_PROHIBITED": "what was said named a well-known person the filter blocks",
    "GENERATED_CONTENT_SAFETY": _TUTOR_REPLY, "GENERATED_AUDIO_SAFETY": _TUTOR_REPLY,
    "GENERATED_CONTENT_PROHIBITED": _TUTOR_REPLY, "GENERATED_CONTENT_BLOCKLIST": _TUTOR_REPLY,
    "RESPONSE_REJECTED": "the tutor refused to answer",
    "blocked": "the safety filter stopped this part of the conversation",
    "safety": "the safety filter stopped this part of the conversation",
}


def describe_flag(reason: str) -> str:
    """Why a turn was flagged, in words; an unknown code is kept, after words saying what kind of thing it is.

    `alert: <category>` is a child turn the tutor asked a grown-up to look at (`alert_grown_up`, bot/turns.py).
    """
    code = reason.strip()
    if code == "alert" or code.startswith("alert:"):
        meaning = ALERT_CATEGORIES.get(code.partition(":")[2].strip(), "")
        return "the tutor asked a grown-up to look at this" + (f": {meaning}" if meaning else "")
    if code in FLAG_WORDS:
        return FLAG_WORDS[code]
    for known, words in FLAG_WORDS.items():
        if known.lower() in code.lower():
            return words
    return f"flagged by a safety check ({code})" if code else "flagged by a safety check"


def turn_markers(turn: TurnRow) -> str:
    """Short tags after a turn: interrupted and/or flagged with its reason in words."""
    marks = []
    if turn.interrupted:
        marks.append("✂️ *interrupted*")
    if turn.flag_reason is not None:
        marks.append(f"🚩 **flagged: {clean(truncate(describe_flag(turn.flag_reason), 140))}**")
    return (" " + " ".join(marks)) if marks else ""


def turn_header(turn: TurnRow, view: ServerView = UTC_VIEW) -> str:
    """`**Name** · 16:04:12` (the server's time) plus markers."""
    return f"**{clean(speaker_label(turn))}** · {view.clock(turn.started_at)}{turn_markers(turn)}"


def language_name(code: str | None) -> str:
    """The spoken language's English name; English for sessions recorded before languages existed."""
    try:
        return language_for(code).name
    except ValueError:
        return code or DEFAULT_LANGUAGE.name


def cost_text(cost_usd: float, tokens: int) -> str:
    """`$0.42 (52,100 tokens)`."""
    return f"{dollars(cost_usd)} ({tokens:,} tokens)"


def category_text(category: str | None) -> str:
    """An alert category as moderators read it: `personal details`."""
    return (category or "alert").replace("_", " ")


def event_summary(event: EventRow) -> tuple[str, str]:
    """(title, detail) of a session event in plain words: what the tutor did or the bot decided, and why."""
    if event.kind == "budget_stop":
        return "Daily budget reached", event.reason
    if event.name == ALERT_GROWN_UP:
        meaning = ALERT_CATEGORIES.get(event.category or "", "")
        title = f"Alert for a grown-up ({category_text(event.category)})"
        return title, f"{event.reason}" + (f" — {meaning}" if meaning else "")
    if event.name == END_CONVERSATION:
        return "The tutor ended the call", event.reason
    return f"Tool call {event.name}", event.reason


def event_block(event: EventRow, view: ServerView = UTC_VIEW) -> str:
    """One event as a transcript line: icon, what happened, why, and what was done."""
    icon = {"budget_stop": "💰"}.get(event.kind) or {ALERT_GROWN_UP: "🔔", END_CONVERSATION: "👋"}.get(event.name, "🛠️")
    title, detail = event_summary(event)
    line = f"{icon} **{clean(title)}** · {view.clock(event.at)}"
    if detail:
        line += f"\n{clean(truncate(detail, EXCERPT_LIMIT))}"
    if event.outcome:
        line += f"\n-# {clean(truncate(event.outcome, 200))}"
    return line


def interleave(turns: Sequence[TurnRow], events: Sequence[EventRow]) -> list[TurnRow | EventRow]:
    """Turns in order, each followed by the events that belong to it; unlinked events by their time."""
    linked: dict[int, list[EventRow]] = {}
    loose: list[EventRow] = []
    turn_ids = {turn.id for turn in turns}
    for event in events:
        if event.turn_id in turn_ids:
            linked.setdefault(event.turn_id, []).append(event)  # type: ignore[arg-type]
        else:
            loose.append(event)
    out: list[TurnRow | EventRow] = []
    for turn in turns:
        while loose and loose[0].at < turn.started_at:
            out.append(loose.pop(0))
        out.append(turn)
        out.extend(linked.get(turn.id, []))
    out.extend(loose)
    return out


def _chunks(text: str, size: int) -> list[str]:
    """Split text into pieces of at most `size`, preferring to break at spaces."""
    pieces: list[str] = []
    while len(text) > size:
        cut = text.rfind(" ", size // 2, size)
        cut = size if cut == -1 else cut
        pieces.append(text[:cut])
        text = text[cut:].lstrip()
    pieces.append(text)
    return pieces


def paginate_blocks(blocks: Iterable[str], budget: int = PAGE_BUDGET) -> list[str]:
    """Pack text blocks into page descriptions of at most `budget` characters each.

    A block larger than a page is split at spaces, so nothing is ever dropped.
    """
    pages: list[str] = []
    current = ""
    for block in blocks:
        for piece in _chunks(block, budget):
            joined = f"{current}\n\n{piece}" if current else piece
            if len(joined) <= budget:
                current = joined
            else:
                pages.append(current)
                current = piece
    if current or not pages:
        pages.append(current)
    return pages


def _finish(title: str, descriptions: list[str], colour: discord.Colour, footer: str = "") -> list[discord.Embed]:
    """Embeds with a page counter in the footer, each checked against Discord's limits."""
    embeds = []
    for number, description in enumerate(descriptions, start=1):
        embed = discord.Embed(title=title[:256], description=description, colour=colour)
        counter = f"Page {number}/{len(descriptions)}"
        embed.set_footer(text=f"{footer} · {counter}" if footer else counter)
        if len(description) > DESCRIPTION_LIMIT or len(embed) > TOTAL_LIMIT:
            raise ValueError(f"embed page {number} exceeds Discord's limits ({len(embed)} characters)")
        embeds.append(embed)
    return embeds


def session_title(session: SessionRow | SessionSummaryRow, view: ServerView = UTC_VIEW) -> str:
    """`Session 42 · 2026-11-25 16:00 Europe/London`."""
    return f"Session {session.id} · {view.when(session.started_at)}"


def transcript_pages(session: SessionRow, turns: Sequence[TurnRow], view: ServerView = UTC_VIEW,
                     events: Sequence[EventRow] = (), usage: UsageTotals | None = None) -> list[discord.Embed]:
    """The whole transcript: summary (when there is one) first, then every turn in order with its events."""
    language = "" if session.language in (None, DEFAULT_LANGUAGE.code) else f" · {language_name(session.language)}"
    cost = "" if usage is None else f" · cost {cost_text(usage.cost_usd, usage.total_tokens)}"
    blocks = [
        f"<#{session.channel_id}> · topic **{clean(view.topic(session.level))}** · age {session.age}"
        f"{language} · started by **{clean(session.starter_name)}** · {format_duration(session.duration())}{cost}"
        + ("" if session.ended_at else " · *still running*")
        + (f"\nWhy it ended: {clean(truncate(session.end_reason, 200))}" if session.end_reason else "")
    ]
    if session.summary:
        blocks.append("__Summary__\n" + clean(session.summary))
    elif session.summary_status == "unavailable":
        blocks.append("*No summary: it could not be made. Try again with `/transcripts summarize`.*")
    if not turns:
        blocks.append("*Nothing was said in this session.*")
    blocks.extend(event_block(item, view) if isinstance(item, EventRow)
                  else f"{turn_header(item, view)}\n{clean(item.text)}" for item in interleave(turns, events))
    flagged = sum(turn.flagged for turn in turns)
    alerts = sum(event.name == ALERT_GROWN_UP for event in events)
    colour = FLAG_COLOUR if flagged or alerts else EMBED_COLOUR
    footer = f"{len(turns)} turns, {flagged} flagged" + (f", {alerts} alert(s)" if alerts else "")
    return _finish(session_title(session, view), paginate_blocks(blocks), colour,
                   f"{footer} · times in {timezones.label(view.time_zone)}")


def session_list_pages(rows: Sequence[SessionSummaryRow], *, per_page: int = 8,
                       view: ServerView = UTC_VIEW) -> list[discord.Embed]:
    """Newest-first listing, a few sessions per page."""
    if not rows:
        return _finish("Tutor sessions", ["No sessions match."], EMBED_COLOUR)
    blocks = []
    for row in rows:
        flags = f" · 🚩 **{row.flagged_count} flagged**" if row.flagged_count else ""
        running = " · *running*" if row.is_running else ""
        blocks.append(
            f"**#{row.id}** · {view.when(row.started_at)} · <#{row.channel_id}>{running}\n"
            f"topic **{clean(view.topic(row.level))}** · age {row.age} · by **{clean(row.starter_name)}** · "
            f"{format_duration(row.duration)} · {row.turn_count} turns · {dollars(row.cost_usd)}{flags}"
        )
    pages = ["\n\n".join(blocks[i : i + per_page]) for i in range(0, len(blocks), per_page)]
    return _finish("Tutor sessions", pages, EMBED_COLOUR, f"{len(rows)} sessions")


def flagged_pages(turns: Sequence[TurnRow], view: ServerView = UTC_VIEW) -> list[discord.Embed]:
    """Every flagged turn with its session id, so a moderator can open the full transcript."""
    if not turns:
        return _finish("Flagged turns", ["No flagged turns. 🎉"], EMBED_COLOUR)
    blocks = [
        f"Session **#{turn.session_id}** · {view.when(turn.started_at)} · {turn_header(turn, view)}\n"
        f"{clean(truncate(turn.text))}"
        for turn in turns
    ]
    return _finish("Flagged turns", paginate_blocks(blocks), FLAG_COLOUR, "Open one with /transcripts show")


def render_txt(session: SessionRow, turns: Sequence[TurnRow], view: ServerView = UTC_VIEW,
               events: Sequence[EventRow] = (), usage: UsageTotals | None = None) -> str:
    """Plain-text export: a header, the summary, then one line per turn and event (every one, uncut)."""
    lines = [
        f"Session {session.id}",
        f"Started: {view.when(session.started_at)}",
        f"Ended: {view.when(session.ended_at) if session.ended_at else 'still running'}"
        + (f" ({session.end_reason})" if session.end_reason else ""),
        f"Channel id: {session.channel_id}",
        f"Topic: {view.topic(session.level)}  Age: {session.age}  "
        f"Language: {language_name(session.language)}  Started by: {session.starter_name}",
    ]
    if usage is not None:
        lines.append(f"Cost: {cost_text(usage.cost_usd, usage.total_tokens)} over {usage.snapshots} turn(s)")
    if session.summary:
        lines += ["", "Summary:", session.summary]
    lines.append("")
    for item in interleave(turns, events):
        if isinstance(item, EventRow):
            title, detail = event_summary(item)
            outcome = f" [{item.outcome}]" if item.outcome else ""
            lines.append(f"[{view.clock(item.at)}] ** {title}: {detail}{outcome}")
            continue
        marks = "".join([" [interrupted]" if item.interrupted else "",
                         f" [flagged: {describe_flag(item.flag_reason)}]" if item.flag_reason is not None else ""])
        lines.append(f"[{view.clock(item.started_at)}] {speaker_label(item)}: {item.text}{marks}")
    return "\n".join(lines) + "\n"


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def render_json(session: SessionRow, turns: Sequence[TurnRow], view: ServerView = UTC_VIEW,
                events: Sequence[EventRow] = (), usage: UsageTotals | None = None) -> str:
    """JSON export: the session's fields, its cost, its turns and its events, timestamps in ISO 8601 UTC."""
    payload = {
        "session": {
            "id": session.id, "guild_id": session.guild_id, "channel_id": session.channel_id,
            "starter_id": session.starter_id, "starter_name": session.starter_name,
            "level": session.level, "topic": view.topic(session.level), "age": session.age,
            "time_zone": timezones.label(view.time_zone),
            "started_at": _iso(session.started_at), "ended_at": _iso(session.ended_at),
            "end_reason": session.end_reason, "summary": session.summary,
            "summary_status": session.summary_status, "language": session.language or DEFAULT_LANGUAGE.code,
        },
        "cost": None if usage is None else {
            "usd": round(usage.cost_usd, 6), "total_tokens": usage.total_tokens, "snapshots": usage.snapshots,
            "tokens": {"text_in": usage.tokens.text_in, "audio_in": usage.tokens.audio_in,
                       "text_out": usage.tokens.text_out, "audio_out": usage.tokens.audio_out,
                       "thoughts": usage.tokens.thoughts},
        },
        "turns": [
            {
                "id": turn.id, "role": turn.role, "speaker_id": turn.speaker_id,
                "speaker_name": speaker_label(turn), "text": turn.text,
                "started_at": _iso(turn.started_at), "ended_at": _iso(turn.ended_at),
                "interrupted": turn.interrupted, "flag_reason": turn.flag_reason,
                "flag_description": describe_flag(turn.flag_reason) if turn.flag_reason is not None else None,
            }
            for turn in turns
        ],
        "events": [
            {
                "id": event.id, "turn_id": event.turn_id, "at": _iso(event.at), "kind": event.kind,
                "name": event.name, "call_id": event.call_id, "category": event.category,
                "reason": event.reason, "outcome": event.outcome,
            }
            for event in events
        ],
    }
    return json.dumps(payload, ensure_ascii=False, indent=2)

"""Transcript rendering: embed pages within Discord's limits, and the txt/json exports."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import discord
import pytest

from bot.storage.models import SessionRow, SessionSummaryRow, TurnRow
from cogs.utils.formatting import (
    DESCRIPTION_LIMIT,
    TOTAL_LIMIT,
    ServerView,
    describe_flag,
    flagged_pages,
    format_duration,
    paginate_blocks,
    render_json,
    render_txt,
    session_list_pages,
    transcript_pages,
    truncate,
)

T0 = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def session(**overrides) -> SessionRow:
    values = {"id": 42, "guild_id": 1, "channel_id": 5, "starter_id": 9, "starter_name": "Ada", "level": "space",
              "age": 8, "started_at": T0, "ended_at": T0 + timedelta(minutes=12), "end_reason": "stopped",
              "resumption_handle": None, "summary": None, "summary_status": "pending"}
    return SessionRow(**{**values, **overrides})


def turn(n: int, text: str = "hello", **overrides) -> TurnRow:
    at = T0 + timedelta(seconds=n)
    values = {"id": n, "session_id": 42, "guild_id": 1, "role": "child" if n % 2 else "tutor", "speaker_id": 9,
              "speaker_name": "Ada", "text": text, "started_at": at, "ended_at": at, "interrupted": False,
              "flag_reason": None}
    return TurnRow(**{**values, **overrides})


def within_limits(embed: discord.Embed) -> bool:
    return len(embed.description or "") <= DESCRIPTION_LIMIT and len(embed) <= TOTAL_LIMIT


def test_long_transcript_splits_into_pages_within_limits():
    """300 turns become several pages, each within 4096/6000 characters, with every turn present."""
    turns = [turn(n, f"turn number {n} " + "words " * 20) for n in range(300)]
    pages = transcript_pages(session(), turns)
    assert len(pages) > 1 and all(within_limits(page) for page in pages)
    text = "\n".join(page.description for page in pages)
    assert all(f"turn number {n} " in text for n in range(300))
    assert pages[-1].footer.text.endswith(f"Page {len(pages)}/{len(pages)}")


def test_one_huge_turn_is_split_not_cut():
    """A single 10,000-character turn spans pages and loses nothing."""
    words = " ".join(f"w{n}" for n in range(2000))
    pages = transcript_pages(session(), [turn(1, words)])
    assert len(pages) >= 3 and all(within_limits(page) for page in pages)
    joined = " ".join(page.description for page in pages)
    assert "w0 " in joined and "w1999" in joined


def test_summary_comes_first():
    """When a summary exists it is on page one before the first turn."""
    pages = transcript_pages(session(summary="- Talked about Mars.", summary_status="ok"), [turn(1, "first words")])
    first = pages[0].description
    assert first.index("Talked about Mars") < first.index("first words")


def test_unavailable_summary_points_to_retry():
    """A failed summary tells the moderator how to retry."""
    pages = transcript_pages(session(summary_status="unavailable"), [turn(1)])
    assert "/transcripts summarize" in pages[0].description


def test_flagged_and_interrupted_are_marked():
    """Flagged turns show their reason; interrupted ones are marked; the embed turns red."""
    pages = transcript_pages(session(), [turn(1, "a", flag_reason="blocked: SAFETY"), turn(2, "b", interrupted=True)])
    assert "flagged: the safety filter stopped this part of the conversation" in pages[0].description
    assert "interrupted" in pages[0].description and "SAFETY" not in pages[0].description
    assert pages[0].colour == discord.Colour.red()


def test_kid_text_is_escaped():
    """Markdown and mentions a child said render literally."""
    description = transcript_pages(session(), [turn(1, "**bold** @everyone")])[0].description
    assert "\\*\\*bold\\*\\*" in description and "@\u200beveryone" in description


def test_speaker_names():
    """Children by display name, the tutor as Tutor, a nameless child as 'A child'."""
    description = transcript_pages(session(), [turn(1), turn(2), turn(3, speaker_name=None)])[0].description
    assert "**Ada**" in description and "**Tutor**" in description and "**A child**" in description


def test_empty_transcript_says_so():
    """No turns still gives one page that says nothing was said."""
    [page] = transcript_pages(session(), [])
    assert "Nothing was said" in page.description


def test_session_list_pages_show_every_column():
    """Each listed session shows date, channel, topic title, age, starter, duration, turns and flags."""
    row = SessionSummaryRow(id=7, guild_id=1, channel_id=55, starter_id=9, starter_name="Ada", level="oceans", age=6,
                            started_at=T0, ended_at=T0 + timedelta(minutes=3), end_reason="stopped",
                            summary_status="ok", duration=timedelta(minutes=3, seconds=5), turn_count=11,
                            flagged_count=2)
    [page] = session_list_pages([row])
    for piece in ("#7", "2026-11-25 15:00", "<#55>", "topic **Oceans and sea life**", "age 6", "Ada", "3 min 05 s",
                  "11 turns", "2 flagged"):
        assert piece in page.description


def test_session_list_paginates():
    """20 sessions at 8 a page make 3 pages."""
    rows = [SessionSummaryRow(id=n, guild_id=1, channel_id=5, starter_id=9, starter_name="Ada", level="space", age=8,
                              started_at=T0, ended_at=None, end_reason=None, summary_status="pending",
                              duration=timedelta(0), turn_count=0, flagged_count=0) for n in range(20)]
    assert len(session_list_pages(rows)) == 3


def test_flagged_pages_name_the_session():
    """Flagged listings carry the session id to open."""
    [page] = flagged_pages([turn(1, "x", flag_reason="safety", session_id=99)])
    assert "#99" in page.description


def test_txt_export_contains_every_turn_uncut():
    """The txt file has a line per turn with its full text and marks."""
    turns = [turn(n, f"sentence {n} " + "z" * 5000) for n in range(5)] + [turn(9, "bad", flag_reason="safety")]
    text = render_txt(session(summary="- sum", summary_status="ok"), turns)
    assert all(f"sentence {n} " + "z" * 5000 in text for n in range(5))
    assert "[flagged: the safety filter stopped this part of the conversation]" in text and "- sum" in text


def test_json_export_parses_and_round_trips():
    """The json file parses and keeps every turn's fields."""
    turns = [turn(1, "hi “there”"), turn(2, "ok", interrupted=True)]
    data = json.loads(render_json(session(), turns))
    assert data["session"]["id"] == 42 and data["session"]["started_at"] == T0.isoformat()
    assert [t["text"] for t in data["turns"]] == ["hi “there”", "ok"]
    assert data["turns"][1]["interrupted"] is True and data["turns"][1]["speaker_name"] == "Tutor"


@pytest.mark.parametrize(("seconds", "expected"), [(45, "45 s"), (750, "12 min 30 s"), (3900, "1 h 05 min")])
def test_format_duration(seconds, expected):
    """Durations read naturally."""
    assert format_duration(timedelta(seconds=seconds)) == expected


def test_truncate_and_paginate_blocks():
    """Truncation adds an ellipsis; packing never exceeds the budget."""
    assert truncate("a" * 50, 10) == "a" * 9 + "…"
    pages = paginate_blocks(["x" * 60] * 10, budget=200)
    assert all(len(page) <= 200 for page in pages) and sum(page.count("x") for page in pages) == 600


@pytest.mark.parametrize(("code", "words"), [
    ("GENERATED_CONTENT_SAFETY", "the safety filter stopped the tutor's reply"),
    ("PROHIBITED_INPUT_CONTENT", "the safety filter found something unsafe in what was said to the tutor"),
    ("RESPONSE_REJECTED", "the tutor refused to answer"),
    ("SOMETHING_NEW", "flagged by a safety check (SOMETHING_NEW)"),
    ("alert: personal_details", "the tutor asked a grown-up to look at this: a child shared personal details (a "
                                "home address, phone number, school, password or full name)"),
    ("alert: bullied", "the tutor asked a grown-up to look at this: a child is being bullied or picked on"),
    ("alert", "the tutor asked a grown-up to look at this"),
])
def test_flag_reasons_are_words(code, words):
    """Live's reason codes read as words; an unknown code still says what kind of thing it is."""
    assert describe_flag(code) == words


def test_custom_topic_title_in_transcripts():
    """A server's own topic shows by its title; one since removed is made readable from its name."""
    [page] = transcript_pages(session(level="volcano-fun"), [], ServerView({"volcano-fun": "Volcano Fun!"}))
    assert "topic **Volcano Fun\\!**" in page.description or "topic **Volcano Fun!**" in page.description
    [gone] = transcript_pages(session(level="volcano-fun"), [])
    assert "topic **Volcano fun**" in gone.description


def test_times_are_shown_in_the_servers_zone():
    """With a time zone, the title, each turn's clock and the txt export use local time and name the zone."""
    view = ServerView(time_zone="Asia/Tokyo")  # UTC+9
    [page] = transcript_pages(session(), [turn(1, "hi")], view)
    assert page.title == "Session 42 · 2026-11-26 00:00 Asia/Tokyo"
    assert "· 00:00:01" in page.description and "times in Asia/Tokyo" in page.footer.text
    text = render_txt(session(), [turn(1, "hi")], view)
    assert "Started: 2026-11-26 00:00 Asia/Tokyo" in text and "[00:00:01] Ada: hi" in text


def test_transcript_and_txt_export_say_why_the_session_ended():
    """A parent reading a transcript sees why it ended (the stored reason), on the page and in the file."""
    ended = session(end_reason="everyone left the voice channel")
    [page] = transcript_pages(ended, [turn(1, "hi")])
    assert "Why it ended: everyone left the voice channel" in page.description
    assert "Ended: 2026-11-25 15:12 UTC (everyone left the voice channel)" in render_txt(ended, [turn(1, "hi")])
    [running] = transcript_pages(session(ended_at=None, end_reason=None), [])
    assert "Why it ended" not in running.description and "*still running*" in running.description

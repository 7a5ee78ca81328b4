"""`TranscriptAssembler`: whole turns from fragments that Live does not order against the reply."""

from __future__ import annotations

import pytest

from bot.live.events import (
    AudioChunk,
    GenerationComplete,
    InputTranscript,
    InterimTranscript,
    Interrupted,
    OutputTranscript,
    TurnComplete,
)
from bot.live.transcript import LATE_PROMPT_WINDOW_S, MAX_TURN_CHARS, TranscriptAssembler


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed_all(assembler: TranscriptAssembler, clock: Clock, events: list) -> list:
    """Feed events one second apart; return every completed turn as (role, text, flag)."""
    done = []
    for event in events:
        clock.now += 1
        done += assembler.feed(event)
    return done


def test_child_turn_closes_with_the_reply_and_tutor_ends_at_generation_complete():
    """Child fragments form one turn; the tutor turn ends at generation_complete, not the later turn_complete."""
    clock = Clock()
    assembler = TranscriptAssembler(clock)
    done = feed_all(assembler, clock, [
        InterimTranscript("Why is"), InputTranscript("Why is the sky blue?", finished=True), AudioChunk(b"\0\0"),
        OutputTranscript("Because of  light."), GenerationComplete(), TurnComplete()])
    assert [(t.role, t.text, t.started_at, t.ended_at) for t in done] == [
        ("child", "Why is the sky blue?", 1.0, 2.0), ("tutor", "Because of light.", 3.0, 5.0)]


REPLY = [AudioChunk(b"\0\0"), OutputTranscript("Blue light scatters."), GenerationComplete()]


@pytest.mark.parametrize("position", range(len(REPLY) + 2), ids=[
    "before-reply", "after-first-chunk", "after-transcript", "after-generation", "after-turn-complete"])
@pytest.mark.parametrize("interims", [True, False], ids=["with-interims", "final-only"])
def test_the_prompt_is_found_wherever_its_transcript_arrives(position, interims):
    """However late the finished input transcript comes, it is stored once, before the reply it prompted."""
    clock = Clock()
    assembler = TranscriptAssembler(clock)
    events = [*REPLY, TurnComplete()]
    events.insert(position, InputTranscript("Why is the sky blue?", finished=True))
    if interims:
        events[:0] = [InterimTranscript("Why"), InterimTranscript("Why is the")]
    done = sorted(feed_all(assembler, clock, events) + assembler.flush(), key=lambda t: t.started_at)
    assert [(t.role, t.text) for t in done] == [("child", "Why is the sky blue?"), ("tutor", "Blue light scatters.")]
    child, tutor = done  # (storage reads turns by started_at, so this is the order a parent sees)
    assert child.started_at < tutor.started_at and child.ended_at <= tutor.started_at


@pytest.mark.parametrize("late", [False, True], ids=["transcript-before-block", "transcript-after-block"])
def test_a_block_flags_the_prompt_too_even_when_its_words_come_later(late):
    """A safety block flags the child's prompt, whether its transcript came before or after the turn_complete."""
    clock = Clock()
    assembler = TranscriptAssembler(clock)
    words = InputTranscript("something bad", finished=True)
    events = [InterimTranscript("something"), TurnComplete("PROHIBITED_INPUT_CONTENT", blocked=True)]
    events.insert(2 if late else 1, words)
    done = feed_all(assembler, clock, events)
    assert sorted((t.role, t.text, t.flag_reason) for t in done) == [
        ("child", "something bad", "PROHIBITED_INPUT_CONTENT"), ("tutor", "", "PROHIBITED_INPUT_CONTENT")]
    assert assembler.flush() == []


def test_a_rejected_turn_is_not_flagged_and_keeps_the_kids_words():
    """RESPONSE_REJECTED (proactive audio chose not to answer) stores the child turn, unflagged, and no tutor turn."""
    clock = Clock()
    assembler = TranscriptAssembler(clock)
    done = feed_all(assembler, clock, [TurnComplete("RESPONSE_REJECTED"),
                                       InputTranscript("Ben, pass me the crayon", finished=True)])
    assert [(t.role, t.text, t.flag_reason) for t in done] == [("child", "Ben, pass me the crayon", None)]


def test_a_child_who_talks_over_the_tutor_prompts_the_next_reply():
    """A kid heard (interim) during a reply opens a turn that outlives that turn_complete and prompts the next one."""
    clock = Clock()
    assembler = TranscriptAssembler(clock)
    done = feed_all(assembler, clock, [OutputTranscript("Once upon"), InterimTranscript("wait"),
                                       InputTranscript("wait, wait", finished=True), Interrupted(), TurnComplete()])
    assert [(t.role, t.text, t.interrupted) for t in done] == [("tutor", "Once upon", True)]
    later = feed_all(assembler, clock, [OutputTranscript("Yes?"), TurnComplete()])
    assert [(t.role, t.text) for t in later] == [("child", "wait, wait"), ("tutor", "Yes?")]


def test_a_final_transcript_long_after_an_unprompted_reply_is_a_new_turn():
    """Outside the late-prompt window a final transcript opens a child turn of its own."""
    clock = Clock()
    assembler = TranscriptAssembler(clock)
    feed_all(assembler, clock, [OutputTranscript("Hello!"), TurnComplete()])
    clock.now += LATE_PROMPT_WINDOW_S + 1
    assert assembler.feed(InputTranscript("hi", finished=True)) == []
    assert [(t.role, t.text) for t in assembler.flush()] == [("child", "hi")]


def test_a_guess_is_kept_when_the_final_words_never_come():
    """A prompt heard only as interim transcripts is stored with the newest guess when the next reply starts."""
    clock = Clock()
    assembler = TranscriptAssembler(clock)
    done = feed_all(assembler, clock, [InterimTranscript("tell me"), InterimTranscript("tell me about"),
                                       OutputTranscript("Sure."), TurnComplete(), OutputTranscript("More?")])
    assert [(t.role, t.text) for t in done] == [("tutor", "Sure."), ("child", "tell me about")]


def test_the_block_itself_is_recorded_even_without_text():
    """A blocked turn_complete flags the child's turn and records an empty flagged tutor turn."""
    assembler = TranscriptAssembler(iter(range(10)).__next__)
    assembler.feed(InputTranscript("something bad"))
    done = assembler.feed(TurnComplete("PROHIBITED_INPUT_CONTENT", blocked=True))
    assert [(t.role, t.text, t.flag_reason) for t in done] == [
        ("child", "something bad", "PROHIBITED_INPUT_CONTENT"), ("tutor", "", "PROHIBITED_INPUT_CONTENT")]
    assert assembler.flush() == []


def test_a_reply_cut_by_a_reconnect_ends_interrupted():
    """A replaced connection closes the reply it was streaming, marked interrupted, even before any words."""
    assembler = TranscriptAssembler(iter(range(10)).__next__)
    assembler.feed(AudioChunk(b"\0\0"))
    done = assembler.cut_by_reconnect(replayed_since=None)
    assert [(t.role, t.text, t.interrupted) for t in done] == [("tutor", "", True)]
    later = assembler.feed(OutputTranscript("Hello again"))
    assert later == [] and [t.text for t in assembler.feed(TurnComplete())] == ["Hello again"]


def test_child_turns_whose_audio_is_replayed_are_dropped():
    """Input sent again after a reconnect is transcribed again: turns heard since then go, older ones stay."""
    clock = Clock()
    assembler = TranscriptAssembler(clock)
    feed_all(assembler, clock, [InputTranscript("first question", finished=True), AudioChunk(b"\0\0"),
                                InterimTranscript("and then")])
    done = assembler.cut_by_reconnect(replayed_since=2.5)
    assert [(t.role, t.text, t.interrupted) for t in done] == [("child", "first question", False),
                                                                ("tutor", "", True)]
    assert assembler.flush() == []


def test_no_turn_grows_past_the_cap():
    """An endless transcript is cut at MAX_TURN_CHARS."""
    assembler = TranscriptAssembler(iter(range(10_000)).__next__)
    for _ in range(2000):
        assembler.feed(OutputTranscript("blah blah "))
    (turn,) = assembler.feed(TurnComplete())
    assert len(turn.text) <= MAX_TURN_CHARS

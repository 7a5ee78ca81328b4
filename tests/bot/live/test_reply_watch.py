"""`ReplyWatch`: when a GoAway may hand over, and the bound on a reply that will not stop."""

from __future__ import annotations

import pytest

from bot.live.events import AudioChunk, OutputTranscript
from bot.live.reply_watch import Output, ReplyWatch, RunawayReply

SECOND = AudioChunk(b"\0\0" * 24_000)


def test_hand_over_waits_for_the_reply_and_a_handle_after_it():
    """Idle and covered → ready; a reply starts → not; its turn_complete → still not until the next handle."""
    watch = ReplyWatch(max_reply_s=90)
    assert watch.ready_to_hand_over
    watch.on_output(OutputTranscript("Once"))
    assert not watch.ready_to_hand_over
    watch.on_generation_complete(5.0)
    assert not watch.ready_to_hand_over and watch.last_reply_end == 5.0
    watch.on_turn_complete(8.0)
    assert not watch.ready_to_hand_over and watch.last_reply_end == 5.0  # the reply ended when it was generated
    watch.on_handle()
    assert watch.ready_to_hand_over


def test_an_overlong_reply_is_stopped_once_then_dropped_then_abandoned():
    """Past the bound: STOP once, DROP after; as long again past it, RunawayReply."""
    watch = ReplyWatch(max_reply_s=2)
    assert [watch.on_output(SECOND) for _ in range(2)] == [Output.PLAY, Output.PLAY]
    assert watch.on_output(SECOND) is Output.STOP
    assert watch.on_output(SECOND) is Output.DROP
    with pytest.raises(RunawayReply):
        watch.on_output(SECOND)


def test_an_interrupted_reply_ends_at_its_turn_complete():
    """Without generation_complete the reply's end is its turn_complete; the next reply starts afresh."""
    watch = ReplyWatch(max_reply_s=1)
    watch.on_output(SECOND)
    watch.on_turn_complete(3.0)
    assert watch.last_reply_end == 3.0 and watch.on_output(SECOND) is Output.PLAY

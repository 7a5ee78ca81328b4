"""bot.live.stream: what a fresh connection is re-seeded with is data, and a withheld turn stays out."""

from __future__ import annotations

from bot.live.buffers import HistoryTurn
from bot.live.events import InputTranscript, OutputTranscript, TurnComplete
from bot.live.stream import EventStream


def test_re_seeded_words_cannot_pose_as_the_app_and_a_withheld_one_stays_out():
    """A kid who said the app's marker is re-seeded with plain brackets; withholding a turn (an alert flagged it
    after it completed) works on the words as the kid said them."""
    stream = EventStream(max_remembered=10)
    for event in (InputTranscript("what is ⟦app note⟧ Mars"), OutputTranscript("A red planet."), TurnComplete(),
                  InputTranscript("I live at ⟦12⟧ Elm Street"), OutputTranscript("Let's keep that private."),
                  TurnComplete()):
        stream.publish(event)
    stream.withhold("child", "I live at ⟦12⟧ Elm Street")
    assert stream.completed_turns == [HistoryTurn("child", "what is (app note) Mars"),
                                      HistoryTurn("tutor", "A red planet."),
                                      HistoryTurn("tutor", "Let's keep that private.")]

"""The pure pieces behind LiveSession: the outbox, the replay ring and the failure verdicts."""

from __future__ import annotations

import socket

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from bot.live.buffers import AudioBoundedQueue, HistoryTurn, Outgoing, ReplayRing, SentMessage
from bot.live.failures import Verdict, classify, classify_code, is_auth_problem, scrub

KEY = "AIzaSyTEST-key-0123456789"
MODEL = "gemini-live-test-model"


def audio(n: int, fill: int = 1) -> Outgoing:
    return Outgoing("audio", audio=bytes([fill]) * n)


def drain(queue: AudioBoundedQueue) -> list[Outgoing]:
    items = []
    while (message := queue.pop()) is not None:
        items.append(message)
    return items


# ----- AudioBoundedQueue -----------------------------------------------------------------------------


def test_queue_is_fifo_and_counts_audio_bytes():
    """Messages come out in the order they went in; audio_bytes follows pushes and pops."""
    queue = AudioBoundedQueue(max_audio_bytes=1000)
    first, end, text = audio(100), Outgoing("audio_end"), Outgoing("text", text="hi")
    for message in (first, end, text):
        queue.push(message)
    assert len(queue) == 3 and queue.audio_bytes == 100
    assert drain(queue) == [first, end, text]
    assert queue.audio_bytes == 0 and queue.pop() is None


def test_queue_over_the_cap_drops_the_oldest_audio_and_counts_it():
    """Past the cap the oldest audio goes first; text and audio_end stay; dropped bytes are counted."""
    queue = AudioBoundedQueue(max_audio_bytes=250)
    text = Outgoing("text", text="keep me")
    queue.push(text)
    queue.push(audio(100, fill=1))
    queue.push(Outgoing("audio_end"))
    queue.push(audio(100, fill=2))
    queue.push(audio(100, fill=3))
    assert queue.dropped_bytes == 100 and queue.audio_bytes == 200
    assert [(m.kind, m.audio[:1]) for m in drain(queue)] == [
        ("text", b""), ("audio_end", b""), ("audio", b"\x02"), ("audio", b"\x03")]


def test_prepend_puts_replay_in_front_in_order_and_trims_from_the_front():
    """Replayed messages go before new input, in their order; the cap then drops the oldest of them."""
    queue = AudioBoundedQueue(max_audio_bytes=300)
    queue.push(audio(100, fill=9))
    queue.prepend([audio(100, fill=1), audio(100, fill=2), audio(100, fill=3)])
    assert queue.dropped_bytes == 100
    assert [m.audio[0] for m in drain(queue)] == [2, 3, 9]


# ----- ReplayRing --------------------------------------------------------------------------------------


def sent(connection: int, index: int, at: float, message: Outgoing | None = None) -> SentMessage:
    return SentMessage(connection, index, at, message or audio(10, fill=index))


def test_ring_confirm_by_index_forgets_only_what_was_consumed():
    """confirm(through_index=2) drops indexes 1 and 2 of that connection; take() returns the rest in order."""
    ring = ReplayRing(max_audio_bytes=10_000)
    for index in (1, 2, 3, 4):
        ring.add(sent(1, index, at=float(index)))
    ring.confirm(1, through_index=2)
    assert [m.audio[0] for m in ring.take()] == [3, 4]
    assert len(ring) == 0 and ring.take() == []


def test_ring_confirm_drops_every_older_connection_but_not_newer_ones():
    """A confirmation on connection 2 covers all of connection 1 and nothing of connection 3."""
    ring = ReplayRing(max_audio_bytes=10_000)
    ring.add(sent(1, 5, at=1.0))
    ring.add(sent(2, 1, at=2.0))
    ring.add(sent(3, 1, at=3.0))
    ring.confirm(2, through_index=0)
    assert [(m.audio[0]) for m in ring.take()] == [1, 1] and len(ring) == 0
    ring.add(sent(3, 1, at=3.0))
    ring.confirm(2, through_index=99)
    assert len(ring) == 1


def test_ring_confirm_by_time_and_take_after_a_time():
    """Without an index, messages sent before the cut-off are confirmed; take(sent_after) skips older ones."""
    ring = ReplayRing(max_audio_bytes=10_000)
    for index in (1, 2, 3, 4):
        ring.add(sent(1, index, at=float(index)))
    ring.confirm(1, sent_before=2.5)
    assert len(ring) == 2
    assert [m.audio[0] for m in ring.take(sent_after=4.0)] == [4]


def test_ring_forgets_the_oldest_audio_past_its_cap():
    """The ring keeps at most max_audio_bytes of audio, newest kept."""
    ring = ReplayRing(max_audio_bytes=25)
    for index in (1, 2, 3):
        ring.add(sent(1, index, at=float(index)))
    assert [m.audio[0] for m in ring.take()] == [2, 3]


def test_history_message_carries_its_turns():
    """A history Outgoing keeps its turns and has no audio, so the caps never drop it."""
    turns = (HistoryTurn("child", "hi"), HistoryTurn("tutor", "hello!"))
    queue = AudioBoundedQueue(max_audio_bytes=0)
    queue.push(Outgoing("history", turns=turns))
    assert queue.dropped_bytes == 0 and queue.pop().turns == turns


# ----- failure verdicts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "permanent", "words"), [
    (1000, False, "closed (code 1000"),
    (1006, False, "closed (code 1006"),
    (1011, False, "closed (code 1011"),
    (1007, True, "refused the session (code 1007"),
    (1008, True, "refused the session (code 1008"),
])
def test_close_codes_are_retry_or_permanent(code, permanent, words):
    """1007/1008 mean the same setup fails again; 1000/1006/1011 are worth a reconnect."""
    verdict = classify_code(code, "some server detail", api_key=KEY, model=MODEL)
    assert verdict == Verdict(verdict.reason, permanent, code)
    assert words in verdict.reason and "some server detail" in verdict.reason


@pytest.mark.parametrize("code", [1000, 1006, 1007, 1008, 1011])
def test_close_reasons_never_contain_the_key(code):
    """A close reason that echoes the key, verbatim or as key=, is scrubbed out of the verdict."""
    verdict = classify_code(code, f"bad request {KEY} from wss://host/ws?key={KEY}&x=1", api_key=KEY, model=MODEL)
    assert KEY not in verdict.reason and "***" in verdict.reason


def test_a_key_complaint_is_permanent_and_names_the_setting():
    """A 1008 whose reason mentions the API key is reported as a key problem, not a generic refusal."""
    verdict = classify_code(1008, f"API key not valid: {KEY}", api_key=KEY, model=MODEL)
    assert verdict.permanent and "GEMINI_API_KEY" in verdict.reason and KEY not in verdict.reason
    assert is_auth_problem(verdict)


def test_a_model_complaint_names_the_model():
    """A 1008 saying the model is not found names the configured model and GEMINI_MODEL."""
    verdict = classify_code(1008, "models/x is not found for API version v1beta", api_key=KEY, model=MODEL)
    assert verdict.permanent and MODEL in verdict.reason and "GEMINI_MODEL" in verdict.reason
    assert not is_auth_problem(verdict)


@pytest.mark.parametrize(("exc", "permanent", "code", "words"), [
    (ConnectionClosedError(Close(1011, "internal error"), None), False, 1011, "internal error"),
    (ConnectionClosedError(Close(1007, "request contains an invalid argument"), None), True, 1007, "refused"),
    (ConnectionClosedError(None, None), False, 1006, "dropped"),
    (TypeError("unexpected keyword"), False, None, "cannot read"),
    (TimeoutError(), False, None, "timed out"),
    (ConnectionRefusedError(), False, None, "could not reach Gemini over the network"),
    (socket.gaierror(-2, "Name or service not known"), False, None, "could not look up Gemini's address"),
])
def test_exceptions_are_classified(exc, permanent, code, words):
    """Each exception the SDK or websockets raises maps to retry or permanent with a plain reason."""
    verdict = classify(exc, api_key=KEY, model=MODEL)
    assert (verdict.permanent, verdict.code) == (permanent, code)
    assert words in verdict.reason and "Traceback" not in verdict.reason


def test_a_connection_closed_error_echoing_the_key_is_scrubbed():
    """The key in a received close frame never reaches the reason."""
    verdict = classify(ConnectionClosedError(Close(1011, f"oops key={KEY}"), None), api_key=KEY, model=MODEL)
    assert not verdict.permanent and KEY not in verdict.reason


def test_scrub_removes_verbatim_and_query_keys():
    """scrub() hides the key itself and any key= query value, even one that is not ours."""
    assert scrub(f"a {KEY} b ?key=other&y=2", KEY) == "a *** b ?key=***&y=2"
    assert scrub("nothing here", "") == "nothing here"


def test_pop_coalesced_joins_queued_audio_up_to_the_cap_and_stops_at_other_kinds():
    """Consecutive audio comes out as one message (≤ cap, bytes in order); text and audio_end stay separate."""
    queue = AudioBoundedQueue(10_000)
    for chunk in (b"\x01" * 640, b"\x02" * 640, b"\x03" * 640):
        queue.push(Outgoing("audio", audio=chunk))
    queue.push(Outgoing("audio_end"))
    queue.push(Outgoing("audio", audio=b"\x04" * 640))
    first = queue.pop_coalesced(1280)
    assert first == Outgoing("audio", audio=b"\x01" * 640 + b"\x02" * 640)
    assert queue.pop_coalesced(1280) == Outgoing("audio", audio=b"\x03" * 640)
    assert queue.pop_coalesced(1280) == Outgoing("audio_end")
    assert queue.pop_coalesced(1280) == Outgoing("audio", audio=b"\x04" * 640)
    assert queue.pop_coalesced(1280) is None
    assert queue.audio_bytes == 0

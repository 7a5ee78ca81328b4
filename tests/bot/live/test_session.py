"""LiveSession with the real google-genai SDK against the fake Live server (tests/fake_live.py)."""

from __future__ import annotations

import asyncio
import base64
import logging
import struct

import pytest
from google.genai import types

from bot.live.events import (
    AudioChunk,
    Failed,
    GenerationComplete,
    InputTranscript,
    Interrupted,
    OutputTranscript,
    Reconnected,
    Reconnecting,
    ToolCall,
    TurnComplete,
    TurnTranscribed,
    Usage,
)
from bot.live.session import HistoryTurn, LiveConnectFailed, LiveConnectOptions, LiveSession
from tests.bot.live.conftest import FAST, Collector
from tests.fake_live import DEADLINE_EXPIRED, STALE_HANDLE

FRAME = 640  # 20 ms at 16 kHz


def pattern(nbytes: int, seed: int = 0) -> bytes:
    """Loud, recognisable input audio (the fake's voice detection hears it as speech)."""
    return bytes((i * 7 + seed) % 251 for i in range(nbytes))


def numbered(frames: int, seed: int = 0) -> bytes:
    """`frames` 20 ms frames of loud audio, each starting with its own number, so gaps and duplicates show."""
    body = pattern(FRAME - 4, seed)
    return b"".join(struct.pack("<I", seed << 16 | i) + body for i in range(frames))


def frame_numbers(audio: bytes) -> list[int]:
    """The numbers of the frames in `audio`, in the order they were heard."""
    return [struct.unpack_from("<I", audio, i)[0] for i in range(0, len(audio) - FRAME + 1, FRAME)]


async def speak(session: LiveSession, audio: bytes, pace: float = 0.0) -> None:
    for i in range(0, len(audio), FRAME):
        session.send_audio(audio[i:i + FRAME])
        await asyncio.sleep(pace)


async def test_setup_carries_the_whole_config(server, live):
    """The setup names the model and voice and turns on transcripts, resumption, compression and strict safety."""
    await live()
    setup = server.connections[0].setup
    assert setup["model"] == "models/gemini-3.8-live"
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert setup["generationConfig"]["speechConfig"]["voice_config"]["prebuilt_voice_config"]["voice_name"] == "Charon"
    assert setup["systemInstruction"]["parts"][0]["text"] == "Be a kind tutor."
    assert setup["inputAudioTranscription"] == {} and setup["outputAudioTranscription"] == {}
    assert setup["sessionResumption"] == {}
    assert "sliding_window" in setup["contextWindowCompression"]
    categories = {s["category"]: s["threshold"] for s in setup["safetySettings"]}
    strict = ("HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_SEXUALLY_EXPLICIT",
              "HARM_CATEGORY_DANGEROUS_CONTENT")
    assert categories == dict.fromkeys(strict, "BLOCK_LOW_AND_ABOVE")
    assert "historyConfig" not in setup


async def test_audio_in_gives_transcripts_audio_and_turns(server, live):
    """Kid audio + end of stream → input/output transcripts, 24 kHz audio, and a child and a tutor turn."""
    session, events = await live()
    audio = pattern(FRAME * 25)
    await speak(session, audio)
    session.end_audio_stream()
    await events.wait(TurnComplete)
    turns = await events.wait(TurnTranscribed, 2)
    assert bytes(server.sessions[0].audio) == audio
    assert [e.text for e in events.of(InputTranscript)] == [server.child_text]
    assert "".join(e.text for e in events.of(OutputTranscript)) == server.reply_text
    chunks = events.of(AudioChunk)
    assert chunks and all(c.sample_rate == 24_000 and c.received_at > 0 for c in chunks)
    assert sum(len(c.pcm) for c in chunks) == 24_000 * 2 * 600 // 1000
    assert [(t.role, t.text) for t in turns] == [("child", server.child_text), ("tutor", server.reply_text)]
    assert turns[0].ended_at <= turns[1].started_at <= turns[1].ended_at
    generated_at = next(i for i, e in enumerate(events.events) if isinstance(e, GenerationComplete))
    assert generated_at < next(i for i, e in enumerate(events.events) if isinstance(e, TurnComplete))
    usage = events.of(Usage)[0]
    assert usage.thoughts_tokens == server.thoughts_tokens and set(usage.prompt_by_modality) == {"TEXT", "AUDIO"}
    assert usage.total_tokens == usage.prompt_tokens + usage.response_tokens + usage.thoughts_tokens
    assert session.stats.response_latency_ms and session.stats.audio_ms_sent == pytest.approx(500)


async def test_usage_is_per_turn_and_grows_with_the_context(server, live):
    """Every turn's prompt re-counts the whole context, so per-turn prompt tokens grow turn after turn."""
    session, events = await live()
    for turn in range(1, 4):
        await speak(session, pattern(FRAME * 25, seed=turn))
        session.end_audio_stream()
        await events.wait(TurnComplete, turn)
    prompts = [u.prompt_tokens for u in events.of(Usage)]
    assert len(prompts) == 3 and prompts[0] < prompts[1] < prompts[2]
    assert all(u.response_by_modality == {"AUDIO": u.response_tokens} for u in events.of(Usage))


async def test_one_message_with_everything_is_handled_fully(server, live):
    """Audio, both transcripts, usage and turn_complete bundled in one message all become events, in order."""
    _, events = await live()
    pcm = b"\x01\x00" * 480
    await server.send_raw({"serverContent": {
        "inputTranscription": {"text": "hi"}, "outputTranscription": {"text": "Hello!"},
        "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000",
                                                "data": base64.b64encode(pcm).decode()}}]},
        "turnComplete": True}, "usageMetadata": {"totalTokenCount": 7}})
    await events.wait(TurnTranscribed, 2)
    kinds = [type(e).__name__ for e in events.events]
    assert kinds == ["InputTranscript", "AudioChunk", "OutputTranscript", "TurnComplete", "TurnTranscribed",
                     "TurnTranscribed", "Usage"]
    assert events.of(AudioChunk)[0].pcm == pcm
    assert [t.text for t in events.of(TurnTranscribed)] == ["hi", "Hello!"]


async def test_interrupted_reply_marks_the_tutor_turn(server, live):
    """A reply cut short emits Interrupted and the stored tutor turn says so."""
    session, events = await live()
    server.interrupt_next()
    session.send_text("tell me about whales")
    await events.wait(Interrupted)
    tutor = [t for t in await events.wait(TurnTranscribed) if t.role == "tutor"]
    assert tutor and tutor[0].interrupted
    assert server.connections[0].texts == ["tell me about whales"]


async def test_safety_block_flags_the_turn(server, live):
    """A turn_complete with a safety reason is `blocked` and the turn carries the flag."""
    session, events = await live()
    server.block_next("GENERATED_CONTENT_SAFETY")
    await speak(session, pattern(FRAME * 5))
    session.end_audio_stream()
    complete = (await events.wait(TurnComplete))[0]
    assert complete.blocked and complete.reason == "GENERATED_CONTENT_SAFETY"
    turns = await events.wait(TurnTranscribed)
    assert turns[0].flag_reason == "GENERATED_CONTENT_SAFETY"


async def test_a_blocked_exchange_is_never_seeded_into_a_fresh_connection(server, live):
    """After a drop with no handle the new connection is seeded with the turns so far, but not the flagged ones:
    an unsafe exchange is never replayed to the model (as storage already leaves it out of later sessions)."""
    server.resumption_updates = False
    session, events = await live()
    server.block_next("PROHIBITED_INPUT_CONTENT")
    server.child_text = "something unsafe"
    await speak(session, pattern(FRAME * 5))
    session.end_audio_stream()
    await events.wait(TurnComplete)
    server.child_text = "what do owls eat?"
    await speak(session, pattern(FRAME * 5, seed=1))
    session.end_audio_stream()
    await events.wait(TurnComplete, 2)
    flagged = [(t.role, t.text) for t in await events.wait(TurnTranscribed, 3) if t.flag_reason]
    assert flagged == [("child", "something unsafe"), ("tutor", "")]  # both sides (the tutor said nothing)
    await server.drop()
    await events.wait(Reconnected)
    fresh = server.connections[1]
    await server.wait_for(lambda: fresh.session is not None and fresh.session.history)
    seeded = [(t["role"], t["parts"][0]["text"]) for t in fresh.session.history]
    assert seeded == [("user", "what do owls eat?"), ("model", server.reply_text)]


async def test_go_away_hands_over_proactively_without_losing_audio(server, live):
    """GoAway → new connection with the newest handle before the 1011; audio sent meanwhile arrives once."""
    session, events = await live()
    first = pattern(FRAME * 10, seed=1)
    await speak(session, first)
    session.end_audio_stream()
    await events.wait(TurnComplete)
    await server.wait_for(lambda: any(c.session and c.session.handles for c in server.connections))
    await asyncio.sleep(0.05)  # the resumption update follows turn_complete
    second = pattern(FRAME * 30, seed=2)
    await server.go_away(time_left=1.0, close_after=0.3)
    await speak(session, second, pace=0.005)
    reconnected = (await events.wait(Reconnected))[0]
    session.end_audio_stream()
    await events.wait(TurnComplete, 2)
    assert reconnected.resumed
    assert server.connections[1].handle_used == "handle-1"
    assert server.connections[1].session is server.sessions[0]
    assert bytes(server.sessions[0].audio) == first + second
    assert not events.of(Failed)
    await server.wait_for(lambda: server.connections[0].closed_at is not None)
    assert server.connections[1].opened_at < server.connections[0].closed_at  # handed over before the close


async def test_a_newer_handle_on_the_old_socket_during_a_hand_over_confirms_nothing(server, live):
    """GoAway: the new connection resumes from the handle chosen when dialling began. A newer handle the old socket
    sends while the new one is set up must not confirm the input the chosen one lacks: it is replayed, not lost."""
    session, events = await live()
    await server.send_resumption_update()  # handle-1: before the kid speaks
    await asyncio.sleep(0.1)
    audio = numbered(50, seed=6)
    await speak(session, audio, pace=0.02)  # 1 s of talk, all of it after handle-1
    old = server.current
    server.setup_delay = 1.0  # the new connection's setup takes a while
    await server.go_away(time_left=10)
    await server.wait_for(lambda: len(server.connections) == 2)
    await asyncio.sleep(0.3)
    await server.send_resumption_update(connection=old)  # handle-2 covers the talk, on the socket being left
    await events.wait(Reconnected)
    session.end_audio_stream()
    await events.wait(TurnComplete)
    assert server.connections[1].handle_used == "handle-1"
    heard, sent = frame_numbers(bytes(server.sessions[0].audio)), frame_numbers(audio)
    assert list(dict.fromkeys(heard)) == sent  # every frame, in order


async def test_unexpected_1011_mid_input_resumes_and_every_byte_arrives(server, live):
    """A 1011 while a kid is talking: resume with the handle, replay the unconfirmed audio, lose nothing.

    With no consumed index (the real service), what was sent in the last UNCONFIRMED_MARGIN_S before the
    handle arrived is replayed: those frames (and only those) may be heard twice.
    """
    session, events = await live()
    audio = numbered(60, seed=3)
    await speak(session, audio[:FRAME * 20], pace=0.002)
    await server.wait_for(lambda: server.audio_received() >= FRAME * 20)
    await server.send_resumption_update()
    await speak(session, audio[FRAME * 20:FRAME * 35], pace=0.002)
    await server.close(1011, "Internal error encountered.")
    await speak(session, audio[FRAME * 35:], pace=0.002)
    await events.wait(Reconnected)
    session.end_audio_stream()
    await events.wait(TurnComplete)
    assert events.of(Reconnecting)[0].attempt == 1
    assert server.connections[1].handle_used is not None
    heard, sent = frame_numbers(bytes(server.sessions[0].audio)), frame_numbers(audio)
    assert list(dict.fromkeys(heard)) == sent  # every frame, in order
    duplicated = [n for n in set(heard) if heard.count(n) > 1]
    assert all(sent.index(n) < 20 for n in duplicated)  # only frames sent just before the handle
    assert len(server.sessions) == 1 and not events.of(Failed)


async def test_input_still_on_its_way_when_a_handle_comes_is_replayed_not_lost(server, live):
    """Google is tens of milliseconds away: a handle covers only the input that had reached it. What the kid said
    while the handle was issued is kept unconfirmed (UNCONFIRMED_MARGIN_S) and replayed after a 1011, not lost."""
    server.latency_s = 0.2
    session, events = await live()
    audio = numbered(40, seed=5)
    await speak(session, audio[:FRAME * 20], pace=0.02)  # real time: the last ~0.2 s is still on its way
    await server.send_resumption_update()
    await asyncio.sleep(0.4)  # the handle reaches the bot; the rest of the audio reaches the server
    await server.close(1011, "Internal error encountered.")
    await speak(session, audio[FRAME * 20:], pace=0.002)
    await events.wait(Reconnected)
    session.end_audio_stream()
    await events.wait(TurnComplete)
    assert server.connections[1].handle_used is not None
    heard, sent = frame_numbers(bytes(server.sessions[0].audio)), frame_numbers(audio)
    assert list(dict.fromkeys(heard)) == sent  # every frame, in order (those on their way heard twice at most)


async def test_drop_before_first_handle_reconnects_fresh_and_reseeds(server, live):
    """A TCP drop before any handle: fresh session seeded with history and completed turns; input flows again."""
    server.resumption_updates = False
    session, events = await live(history=[HistoryTurn("child", "I like sharks"), HistoryTurn("tutor", "Me too!")])
    assert server.connections[0].wants_initial_history
    await server.wait_for(lambda: len(server.sessions[0].history) == 2)
    session.send_text("what do sharks eat?")
    await events.wait(TurnTranscribed, 1)
    await server.wait_for(lambda: server.replies_sent == 1)
    await server.drop()
    await events.wait(Reconnected)
    audio = pattern(FRAME * 10, seed=4)
    await speak(session, audio)
    session.end_audio_stream()
    await events.wait(TurnComplete, 2)
    fresh = server.connections[1]
    assert fresh.handle_used is None and fresh.wants_initial_history
    seeded = [(t["role"], t["parts"][0]["text"]) for t in fresh.session.history]
    assert seeded[:2] == [("user", "I like sharks"), ("model", "Me too!")]
    assert ("model", server.reply_text) in seeded
    assert bytes(fresh.session.audio) == audio
    assert not events.of(Reconnected)[0].resumed


async def test_bad_key_fails_once_with_a_plain_sentence(server, settings, monkeypatch, caplog):
    """A rejected key is permanent: one connection, a plain reason, and the key never appears anywhere."""
    # websockets' own DEBUG logs print request headers; bot.log pins that logger at WARNING.
    caplog.set_level(logging.DEBUG, logger="bot")
    bad_key = "AIzaSy-this-is-the-wrong-key-123"
    bad = settings.model_copy(update={"gemini_api_key": type(settings.gemini_api_key)(bad_key)})
    session = LiveSession(bad, system_instruction="x", connect_options=FAST)
    with pytest.raises(LiveConnectFailed) as caught:
        await session.start()
    events = [e async for e in session.events()]
    assert isinstance(events[-1], Failed) and events[-1].permanent
    assert "API key" in str(events[-1].reason) and "GEMINI_API_KEY" in events[-1].reason
    assert len(server.connections) == 1
    assert bad_key not in str(caught.value) and bad_key not in events[-1].reason
    assert bad_key not in caplog.text
    await session.close()


async def test_unknown_model_fails(server, settings):
    """An unknown model is permanent and named in the reason."""
    session = LiveSession(settings.model_copy(update={"gemini_model": "no-such-model"}), system_instruction="x",
                          connect_options=FAST)
    with pytest.raises(LiveConnectFailed) as caught:
        await session.start()
    assert "no-such-model" in str(caught.value) and "GEMINI_MODEL" in str(caught.value)
    assert len(server.connections) == 1
    await session.close()


async def test_repeated_failures_give_up_after_bounded_retries(server, live):
    """When every reconnect is refused, the session retries max_retries times, then fails (not permanent)."""
    _, events = await live()
    server.setup_failure = (1011, "Internal error encountered.")
    await server.drop()
    failed = (await events.wait(Failed))[0]
    assert not failed.permanent and "3 tries" in failed.reason
    assert len(server.connections) == 1 + FAST.max_retries
    assert [e.attempt for e in events.of(Reconnecting)] == [1, 2, 3]


async def test_seed_history_after_start_sends_context(server, live):
    """seed_history on a running session sends client content without asking for a reply."""
    session, _ = await live()
    await session.seed_history([HistoryTurn("child", "my cat is called Tom")])
    await server.wait_for(lambda: server.connections[0].client_contents)
    content = server.connections[0].client_contents[0]
    assert content["turns"][0]["parts"][0]["text"] == "my cat is called Tom"
    assert not content.get("turnComplete")
    await asyncio.sleep(0.1)
    assert server.replies_sent == 0


async def test_close_is_idempotent_and_leaves_no_tasks(server, settings):
    """close() twice is fine; afterwards no session task is left and sends are ignored."""
    session = LiveSession(settings, system_instruction="x", connect_options=FAST)
    await session.start()
    await session.close()
    await session.close()
    session.send_audio(b"\x00" * FRAME)
    await asyncio.sleep(0)
    leftover = [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith(f"live-{session.id}")]
    assert leftover == []
    assert [e async for e in session.events()] == []
    await server.wait_for(lambda: server.connections[0].closed)


async def test_resumed_connection_gets_deadline_close_without_failure(server, live):
    """The 1011 "Deadline expired" that follows GoAway is not reported as a failure."""
    session, events = await live()
    session.send_text("hi")
    await events.wait(TurnComplete)
    await asyncio.sleep(0.05)
    await server.go_away(time_left=0.5, close_after=0.05)
    await events.wait(Reconnected)
    await asyncio.sleep(0.2)
    assert not events.of(Failed)
    assert DEADLINE_EXPIRED  # the close reason the fake uses
    assert len(events.of(Reconnecting)) == 1


async def test_failure_count_resets_after_a_stable_connection(server, settings):
    """Drops far apart never add up to a failure: the count resets once a connection has been stable."""
    options = LiveConnectOptions(max_retries=1, first_retry_delay=0.01, stable_after=0.2, close_timeout=0.5)
    session = LiveSession(settings, system_instruction="x", connect_options=options)
    await session.start()
    events = Collector(session)
    try:
        for round_number in (1, 2, 3):
            await server.drop()
            await events.wait(Reconnected, round_number)
            await asyncio.sleep(0.3)
        session.send_text("still here")
        await events.wait(TurnComplete)
        assert not events.of(Failed)
        assert session.stats.reconnects == 3
    finally:
        await session.close()
        await events.stop()


async def test_with_a_consumed_index_every_byte_arrives_exactly_once(server, live):
    """The kinder server (opt-in) that reports the consumed index: replay is exact, nothing twice."""
    server.report_consumed_index = True
    session, events = await live()
    audio = numbered(50, seed=5)
    await speak(session, audio[:FRAME * 20], pace=0.002)
    await server.wait_for(lambda: server.audio_received() >= FRAME * 20)
    await server.send_resumption_update()
    await speak(session, audio[FRAME * 20:FRAME * 30], pace=0.002)
    await server.close(1011, "Internal error encountered.")
    await speak(session, audio[FRAME * 30:], pace=0.002)
    await events.wait(Reconnected)
    session.end_audio_stream()
    await events.wait(TurnComplete)
    assert frame_numbers(bytes(server.sessions[0].audio)) == frame_numbers(audio)


async def test_close_keeps_the_turn_in_progress_for_storage(server, settings):
    """Closing mid-turn flushes the partial turns, which drain_pending_turns hands back after close."""
    session = LiveSession(settings, system_instruction="x", connect_options=FAST)
    await session.start()
    server.interrupt_next()
    session.send_text("count to ten")
    await server.wait_for(lambda: server.replies_sent == 1)
    await asyncio.sleep(0.05)
    await server.send_raw({"serverContent": {"inputTranscription": {"text": "and then?"}}})
    await asyncio.sleep(0.1)
    await session.close()
    turns = session.drain_pending_turns()
    assert [(t.role, t.interrupted) for t in turns] == [("tutor", True), ("child", False)]
    assert turns[-1].text == "and then?"
    assert [e async for e in session.events()] == []


async def test_refused_handle_falls_back_to_a_fresh_reseeded_session(server, live):
    """If the server no longer knows the handle (expired), reconnect fresh and re-seed instead of failing."""
    session, events = await live()
    session.send_text("what is a comet?")
    await events.wait(TurnTranscribed)
    await server.wait_for(lambda: bool(server.sessions[0].handles))
    await asyncio.sleep(0.05)
    server.sessions[0].handles.clear()
    await server.drop()
    reconnected = (await events.wait(Reconnected))[0]
    assert not reconnected.resumed and not events.of(Failed)
    refused, fresh = server.connections[1], server.connections[2]
    assert refused.handle_used is None and refused.session is None  # closed with 1008 at setup
    assert fresh.session is not server.sessions[0]
    await server.wait_for(lambda: len(fresh.session.history) >= 1)
    assert ("model", server.reply_text) in [(t["role"], t["parts"][0]["text"]) for t in fresh.session.history]
    session.send_text("and a meteor?")
    await events.wait(TurnComplete, 2)
    assert fresh.texts == ["and a meteor?"]


async def test_a_close_reason_echoing_the_key_is_scrubbed(server, settings, caplog):
    """Even when the server's close reason contains the API key, Failed.reason and our logs do not."""
    caplog.set_level(logging.DEBUG, logger="bot")
    server.setup_failure = (1008, f"Request for key={server.api_key} is malformed.")
    session = LiveSession(settings, system_instruction="x", connect_options=FAST)
    with pytest.raises(LiveConnectFailed) as caught:
        await session.start()
    assert "***" in caught.value.failure.reason and caught.value.failure.permanent
    assert server.api_key not in caught.value.failure.reason and server.api_key not in caplog.text
    await session.close()


async def test_a_tool_call_arrives_and_the_response_reaches_the_server(server, live):
    """A toolCall becomes a ToolCall event; send_tool_response puts the result on the wire with its id."""
    session, events = await live()
    await server.send_raw({"toolCall": {"functionCalls": [{"id": "call-9", "name": "lookup", "args": {"q": "moon"}}]}})
    (call,) = (await events.wait(ToolCall))[0].calls
    assert (call.id, call.name, call.args) == ("call-9", "lookup", {"q": "moon"})
    session.send_tool_response([types.FunctionResponse(id=call.id, name=call.name, response={"ok": True})])
    await server.wait_for(lambda: server.tool_responses)
    assert server.tool_responses == [{"id": "call-9", "name": "lookup", "response": {"ok": True}}]


async def test_go_away_mid_reply_lets_it_finish_on_the_old_socket(server, live):
    """GoAway while the tutor speaks: the whole reply arrives on the old socket, then the handover resumes with
    the handle issued after that reply, and the next turn is answered on the new connection."""
    server.reply_audio_ms = 1500
    session, events = await live()
    session.send_text("tell me about owls")
    await events.wait(AudioChunk)
    await server.go_away(time_left=10.0)
    await events.wait(Reconnected)
    assert not events.of(Interrupted) and not events.of(Failed)
    assert sum(len(c.pcm) for c in events.of(AudioChunk)) == 24_000 * 2 * 1500 // 1000
    tutor = [t for t in events.of(TurnTranscribed) if t.role == "tutor"]
    assert [(t.text, t.interrupted) for t in tutor] == [(server.reply_text, False)]
    old, new = server.connections[0], server.connections[1]
    assert new.handle_used == max(old.session.handles, key=lambda h: int(h.split("-")[1]))  # issued after the reply
    assert events.of(Reconnected)[0].resumed
    session.send_text("and bats?")
    await events.wait(TurnComplete, 2)
    assert new.texts == ["and bats?"] and old.texts == ["tell me about owls"]


async def test_go_away_with_too_little_time_hands_over_before_the_close(server, live):
    """A reply that cannot finish in time_left is cut just before the deadline (stored interrupted), the new
    connection is up before the old one closes, and the question, sent after the newest handle, is answered again."""
    session, events = await live()
    server.endless_next()
    session.send_text("count to a million")
    await events.wait(AudioChunk)
    await server.go_away(time_left=1.0)
    await events.wait(Reconnected)
    await server.wait_for(lambda: server.connections[0].closed_at is not None)
    assert server.connections[1].opened_at < server.connections[0].closed_at
    assert [t.interrupted for t in events.of(TurnTranscribed) if t.role == "tutor"] == [True]
    await events.wait(TurnComplete)
    assert server.connections[1].texts == ["count to a million"] and not events.of(Failed)


async def test_deadline_close_then_a_stale_handle_starts_fresh_and_reseeded(server, live):
    """1011 "Deadline expired" with no GoAway, then the handle refused with 1007: a fresh session seeded with
    what was said, not a failure (1007 is also the bad-key code, but this one names no key)."""
    session, events = await live()
    session.send_text("what is a comet?")
    await events.wait(TurnTranscribed)
    await server.wait_for(lambda: bool(server.sessions[0].handles))
    await asyncio.sleep(0.05)
    server.sessions[0].handles.clear()  # the service no longer knows the handle
    await server.expire()
    reconnected = (await events.wait(Reconnected))[0]
    refused, fresh = server.connections[1], server.connections[2]
    assert refused.refusal == (1007, STALE_HANDLE) and not reconnected.resumed and not events.of(Failed)
    await server.wait_for(lambda: len(fresh.session.history) >= 1)
    assert ("model", server.reply_text) in [(t["role"], t["parts"][0]["text"]) for t in fresh.session.history]


async def test_a_key_revoked_mid_session_fails_at_once_on_resume(server, live):
    """A 1007 that names the key while resuming is not a stale handle: the session fails at once, saying so."""
    session, events = await live()
    session.send_text("hi")
    await events.wait(TurnComplete)
    await server.wait_for(lambda: bool(server.sessions[0].handles))
    server.api_key = "a-new-key-the-bot-does-not-have"
    await server.drop()
    failed = (await events.wait(Failed))[0]
    assert failed.permanent and "GEMINI_API_KEY" in failed.reason
    assert len(server.connections) == 2  # one attempt, no retries

"""The fake Live server tells the truth by default: what gemini-3.8-live does, seen through the real SDK.

Each test drives the real google-genai SDK against `tests.fake_live.FakeLiveServer` and checks one fact
from /work/shared/gemini_live_38.md (§F lists where the old fake was kinder).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from google import genai
from google.genai import errors, types

from tests.fake_live import BAD_KEY, DEADLINE_EXPIRED, STALE_HANDLE, FakeLiveServer, make_client_settings
from tests.fake_live_model import SETUP_RULES, rejected_setup

MODEL = "gemini-3.8-live"
SPEECH = bytes((i * 7) % 251 for i in range(640)) * 25  # 0.5 s the fake's voice detection hears as speech


@pytest.fixture
async def server():
    async with FakeLiveServer(reply_audio_ms=400) as fake:
        yield fake


@pytest.fixture
def client(server, monkeypatch):
    settings = make_client_settings(server, monkeypatch)
    return genai.Client(api_key=settings.gemini_api_key.get_secret_value(),
                        http_options=types.HttpOptions(api_version="v1beta", base_url=server.url))


def config(**fields) -> types.LiveConnectConfig:
    fields.setdefault("response_modalities", [types.Modality.AUDIO])
    return types.LiveConnectConfig(session_resumption=types.SessionResumptionConfig(), **fields)


async def one_turn(session) -> list[tuple[float, types.LiveServerMessage]]:
    """Every message up to and including the next turn_complete, with its arrival time."""
    seen = []
    async for message in session.receive():
        seen.append((time.monotonic(), message))
    return seen


async def ask(session) -> None:
    await session.send_realtime_input(audio=types.Blob(data=SPEECH, mime_type="audio/pcm;rate=16000"))
    await session.send_realtime_input(audio_stream_end=True)


async def test_a_reply_bundles_parts_and_turn_complete_waits_for_playback(server, client):
    """Audio and its transcript share events; generation_complete comes first, turn_complete a playback later."""
    async with client.aio.live.connect(model=MODEL, config=config()) as session:
        await ask(session)
        seen = await one_turn(session)
    contents = [(t, m.server_content) for t, m in seen if m.server_content]
    bundled = [c for _, c in contents if c.model_turn and c.output_transcription]
    assert bundled, "3.x carries audio and transcript in one event"
    first_audio = next(t for t, c in contents if c.model_turn)
    generated = next(t for t, c in contents if c.generation_complete)
    completed = next(t for t, c in contents if c.turn_complete)
    assert generated < completed and completed - first_audio >= 0.4 - 0.15  # the playback length (minus load jitter)
    assert not any(c.interrupted for _, c in contents)


async def test_the_input_transcript_is_finished_once_after_interim_guesses(server, client):
    """Interim guesses while the kid speaks; one finished input transcription, here after the first audio."""
    async with client.aio.live.connect(model=MODEL, config=config()) as session:
        await ask(session)
        seen = await one_turn(session)
    contents = [m.server_content for _, m in seen if m.server_content]
    finals = [i for i, c in enumerate(contents) if c.input_transcription]
    interims = [c.interim_input_transcription.text for c in contents if c.interim_input_transcription]
    assert len(finals) == 1 and contents[finals[0]].input_transcription.finished
    assert contents[finals[0]].input_transcription.text == server.child_text
    first_audio = next(i for i, c in enumerate(contents) if c.model_turn)
    assert finals[0] > first_audio  # not ordered before the reply
    assert interims and all(server.child_text.startswith(text) for text in interims)


async def test_resumption_updates_carry_no_consumed_index(server, client):
    """A handle while idle, `resumable: false` while generating, never `last_consumed_client_message_index`."""
    async with client.aio.live.connect(model=MODEL, config=config()) as session:
        await ask(session)
        seen = await one_turn(session)
        async with asyncio.timeout(2):
            after = [await anext(m async for m in session.receive() if m.session_resumption_update)]
    updates = [m.session_resumption_update for _, m in seen if m.session_resumption_update] + \
              [m.session_resumption_update for m in after]
    assert not updates[0].resumable and not updates[0].new_handle
    assert updates[-1].resumable and updates[-1].new_handle
    assert all(u.last_consumed_client_message_index is None for u in updates)


async def test_usage_is_per_turn_grows_and_has_details(server, client):
    """usage_metadata per turn: prompt re-counts the context (grows), TEXT/AUDIO details, thoughts tokens."""
    async with client.aio.live.connect(model=MODEL, config=config()) as session:
        usages = []
        for _ in range(2):
            await ask(session)
            usages += [m.usage_metadata for _, m in await one_turn(session) if m.usage_metadata]
    assert len(usages) == 2 and usages[0].prompt_token_count < usages[1].prompt_token_count
    assert all(u.thoughts_token_count == server.thoughts_tokens for u in usages)
    assert {d.modality.value for d in usages[1].prompt_tokens_details} == {"TEXT", "AUDIO"}
    assert usages[1].response_tokens_details[0].modality.value == "AUDIO"


async def test_response_rejected_is_a_turn_with_no_audio(server, client):
    """Proactive audio choosing not to answer: turn_complete with RESPONSE_REJECTED and no audio."""
    server.reject_next()
    async with client.aio.live.connect(model=MODEL, config=config()) as session:
        await ask(session)
        seen = [m for _, m in await one_turn(session)]
    assert not any(m.data for m in seen)
    assert seen[-1].server_content.turn_complete_reason == types.TurnCompleteReason.RESPONSE_REJECTED


async def test_speech_during_a_reply_interrupts_it(server, client):
    """Voiced input while the reply plays: interrupted → turn_complete, no generation_complete."""
    server.reply_audio_ms = 3000
    async with client.aio.live.connect(model=MODEL, config=config()) as session:
        await ask(session)
        seen = []
        async for message in session.receive():
            seen.append(message)
            if message.data and len(seen) == 3:
                await session.send_realtime_input(audio=types.Blob(data=SPEECH, mime_type="audio/pcm;rate=16000"))
    contents = [m.server_content for m in seen if m.server_content]
    assert any(c.interrupted for c in contents) and contents[-1].turn_complete
    assert not any(c.generation_complete for c in contents)


async def test_go_away_gives_sixty_seconds(server, client):
    """GoAway's time_left defaults to 60 s, and the socket really keeps answering meanwhile."""
    async with client.aio.live.connect(model=MODEL, config=config()) as session:
        await server.go_away()
        message = await anext(aiter(session.receive()))
        assert message.go_away.time_left == "60s"
        await ask(session)
        assert any(m.data for _, m in await one_turn(session))  # still answering after the GoAway


async def test_without_switches_the_fake_is_the_real_service():
    """The defaults are 3.8's (each kinder behaviour is a switch a test asks for): no consumed index, bundled parts,
    turn_complete after playback, 2 s voice detection that ignores the setup's silence, barge-in, interim
    transcripts, 136 thought tokens a turn, a ~10-minute connection with GoAway 60 s before its end, and a
    network between (client messages arrive late)."""
    async with FakeLiveServer() as fake:
        assert not fake.report_consumed_index and fake.bundle_parts and fake.turn_complete_after_playback
        assert fake.vad_silence_ms == 2000 and not fake.honours_silence_duration
        assert fake.barge_in_ms is not None and fake.interim_every_ms is not None
        assert (fake.thoughts_tokens, fake.connection_lifetime_s, fake.go_away_lead_s) == (136, 600, 60)
        assert fake.latency_s > 0


async def test_two_seconds_of_silence_end_a_spoken_turn_without_audio_stream_end(server, client):
    """The service's own voice detection ends a turn: after speech, 1.9 s of silence gets no reply, 2 s does."""
    silence = bytes(3_200)  # 100 ms of 16 kHz s16le
    async with client.aio.live.connect(model=MODEL, config=config()) as session:
        await session.send_realtime_input(audio=types.Blob(data=SPEECH, mime_type="audio/pcm;rate=16000"))
        for _ in range(19):
            await session.send_realtime_input(audio=types.Blob(data=silence, mime_type="audio/pcm;rate=16000"))
        await asyncio.sleep(0.5)
        assert server.replies_sent == 0
        await session.send_realtime_input(audio=types.Blob(data=silence, mime_type="audio/pcm;rate=16000"))
        async with asyncio.timeout(5):
            assert any(m.data for _, m in await one_turn(session))


async def test_a_connection_ends_on_its_own_after_a_go_away(server, client):
    """Every connection has a lifetime: GoAway `go_away_lead_s` before its end, then 1011 "Deadline expired"."""
    server.connection_lifetime_s, server.go_away_lead_s = 1.0, 0.6
    async with client.aio.live.connect(model=MODEL, config=config()) as session:
        opened = time.monotonic()
        receiving = session.receive()
        message = await anext(receiving)
        assert message.go_away.time_left == "0.6s" and time.monotonic() - opened >= 0.3
        with pytest.raises(errors.APIError) as caught:
            async for _ in receiving:
                pass
    assert caught.value.code == 1011 and DEADLINE_EXPIRED in str(caught.value)
    assert time.monotonic() - opened >= 0.9


async def test_go_away_closes_with_1011_when_time_left_is_up(server, client):
    """When time_left has passed the connection is closed with 1011 "Deadline expired", not before."""
    async with client.aio.live.connect(model=MODEL, config=config()) as session:
        sent = time.monotonic()
        await server.go_away(time_left=0.5)
        with pytest.raises(errors.APIError) as caught:
            async for _ in session.receive():
                pass
    assert caught.value.code == 1011 and DEADLINE_EXPIRED in str(caught.value)
    assert time.monotonic() - sent >= 0.5


async def test_deadline_close_comes_without_go_away(server, client):
    """The 58:00 case: close 1011 "Deadline expired" with no GoAway first."""
    async with client.aio.live.connect(model=MODEL, config=config()) as session:
        await server.expire()
        with pytest.raises(errors.APIError) as caught:
            async for message in session.receive():
                assert message.go_away is None
    assert caught.value.code == 1011 and DEADLINE_EXPIRED in str(caught.value)


async def test_a_stale_handle_is_refused_with_1007(server, client):
    """Resuming with a handle the service no longer knows: close 1007 (the code a bad key gets too)."""
    cfg = types.LiveConnectConfig(response_modalities=[types.Modality.AUDIO],
                                  session_resumption=types.SessionResumptionConfig(handle="handle-404"))
    with pytest.raises(errors.APIError) as caught:
        async with client.aio.live.connect(model=MODEL, config=cfg) as session:
            await anext(aiter(session.receive()))
    assert caught.value.code == 1007 and STALE_HANDLE in str(caught.value)
    assert server.connections[-1].refusal == (1007, STALE_HANDLE)


async def test_a_bad_key_is_refused_with_1007(server, client):
    """A wrong key: close 1007 with the service's sentence."""
    bad = genai.Client(api_key="wrong", http_options=types.HttpOptions(api_version="v1beta", base_url=server.url))
    with pytest.raises(errors.APIError) as caught:
        async with bad.aio.live.connect(model=MODEL, config=config()) as session:
            await anext(aiter(session.receive()))
    assert caught.value.code == 1007 and BAD_KEY in str(caught.value)


REJECTED_CONFIGS = {
    "thinking_config": {"thinking_config": types.ThinkingConfig(thinking_budget=0)},
    "enable_affective_dialog": {"enable_affective_dialog": True},
    "proactivity.proactive_audio=false": {"proactivity": types.ProactivityConfig(proactive_audio=False)},
    "response_modalities=TEXT": {"response_modalities": [types.Modality.TEXT]},
    "tools.code_execution": {"tools": [types.Tool(code_execution=types.ToolCodeExecution())]},
    "tools.google_maps": {"tools": [types.Tool(google_maps=types.GoogleMaps())]},
    "tools.url_context": {"tools": [types.Tool(url_context=types.UrlContext())]},
}


def test_every_rule_has_a_config_that_breaks_it():
    """The table below covers every setup rule the fake enforces."""
    assert set(REJECTED_CONFIGS) == {rule.field for rule in SETUP_RULES}


@pytest.mark.parametrize("field", sorted(REJECTED_CONFIGS))
async def test_a_setup_field_3_8_rejects_closes_with_1007_and_its_reason(server, client, field):
    """Each field 3.8 refuses closes the socket at setup with 1007 and the service's sentence."""
    with pytest.raises(errors.APIError) as caught:
        async with client.aio.live.connect(model=MODEL, config=config(**REJECTED_CONFIGS[field])) as session:
            await anext(aiter(session.receive()))
    rule = next(r for r in SETUP_RULES if r.field == field)
    assert caught.value.code == 1007 and rule.reason[:60] in str(caught.value)
    assert rejected_setup(server.connections[-1].setup) is rule


async def test_a_scripted_tool_call_is_sent_and_its_response_recorded(server, client):
    """A declared function is called (id set); the response the client sends is recorded; a follow-up is spoken."""
    script = server.call_tool_next("lookup_fact", {"topic": "moon"})
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration(name="lookup_fact", description="x")])]
    async with client.aio.live.connect(model=MODEL, config=config(tools=tools)) as session:
        await ask(session)
        seen = [m for _, m in await one_turn(session)]
        calls = [m.tool_call for m in seen if m.tool_call]
        assert calls and calls[0].function_calls[0].name == "lookup_fact"
        assert calls[0].function_calls[0].id == script.id and calls[0].function_calls[0].args == {"topic": "moon"}
        await session.send_tool_response(function_responses=[types.FunctionResponse(
            id=script.id, name="lookup_fact", response={"fact": "The moon has no air."})])
        follow_up = [m for _, m in await one_turn(session)]
    assert server.tool_responses[0]["response"] == {"fact": "The moon has no air."}
    assert any(m.data for m in follow_up)


@pytest.mark.parametrize(("result", "calls"), [({}, 3), ({"status": "ok", "message": "Done."}, 1)],
                         ids=["empty", "informative"])
async def test_a_call_answered_with_an_empty_result_is_made_again(server, client, result, calls):
    """3.8 re-issues a call whose result says nothing (here twice more); an informative result ends it."""
    server.call_tool_next("lookup_fact")
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration(name="lookup_fact", description="x")])]
    async with client.aio.live.connect(model=MODEL, config=config(tools=tools)) as session:

        async def answer_every_call() -> None:
            while True:  # receive() ends with each turn
                async for message in session.receive():
                    if message.tool_call:
                        await session.send_tool_response(function_responses=[types.FunctionResponse(
                            id=message.tool_call.function_calls[0].id, name="lookup_fact", response=result,
                            scheduling=types.FunctionResponseScheduling.SILENT)])

        answering = asyncio.create_task(answer_every_call())
        await ask(session)
        await server.wait_for(lambda: len(server.tool_responses) >= calls)
        await asyncio.sleep(0.5)  # no further call comes
        answering.cancel()
        await asyncio.gather(answering, return_exceptions=True)
    assert len(server.tool_calls) == calls


async def test_input_before_a_tool_response_cancels_the_call(server, client):
    """A kid speaking before the tool answered: tool_call_cancellation with the call's id."""
    script = server.call_tool_next("lookup_fact", blocking=True)
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration(name="lookup_fact", description="x")])]
    async with client.aio.live.connect(model=MODEL, config=config(tools=tools)) as session:
        await ask(session)
        receiving = session.receive()
        call = await anext(m async for m in receiving if m.tool_call)
        await session.send_realtime_input(audio=types.Blob(data=SPEECH, mime_type="audio/pcm;rate=16000"))
        cancelled = await anext(m async for m in receiving if m.tool_call_cancellation)
        with contextlib.suppress(StopAsyncIteration):
            await receiving.aclose()
    assert cancelled.tool_call_cancellation.ids == [call.tool_call.function_calls[0].id] == [script.id]


async def test_an_undeclared_function_is_never_called(server, client):
    """The model only calls functions the setup declares; a script naming another is recorded, not sent."""
    server.call_tool_next("not_declared")
    async with client.aio.live.connect(model=MODEL, config=config()) as session:
        await ask(session)
        seen = [m for _, m in await one_turn(session)]
    assert not any(m.tool_call for m in seen) and server.undeclared_tool_calls == ["not_declared"]

"""One model turn of the fake Live server, frame by frame as gemini-3.8-live sends it (see `tests.fake_live`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.fake_live_model import ToolCallScript, declared_functions, tone

if TYPE_CHECKING:
    from tests.fake_live import FakeConnection, FakeLiveServer

CHUNK_GAP_S = 0.002  # replies are generated much faster than real time, but not in one burst
TOOL_WAIT_S = 10.0
EMPTY_RESULT_REPEATS = 2  # a NON_BLOCKING call answered with an empty result is made again this often


@dataclass(slots=True)
class Plan:
    """What the next reply does (scripted by the test, else a normal spoken answer)."""

    kind: str = "answer"  # answer | blocked | rejected | ignored | endless
    reason: str | None = None
    interrupt: bool = False
    tool: ToolCallScript | None = None


class Reply:
    """One model turn on one connection, sent frame by frame as 3.8 would."""

    def __init__(self, server: FakeLiveServer, conn: FakeConnection, heard: str | None, reply_text: str,
                 plan: Plan) -> None:
        self.server, self.conn, self.heard, self.reply_text, self.plan = server, conn, heard, reply_text, plan
        self.input_sent = heard is None
        self.timing = server.input_transcript_at

    async def send(self, message: dict) -> None:
        assert self.conn.ws is not None
        await self.conn.ws.send(json.dumps(message))

    async def send_input(self, *, when: str | None = None) -> None:
        """The one finished input transcription, if `when` is this reply's timing (None: now, if not sent yet)."""
        if self.input_sent or (when is not None and when != self.timing):
            return
        self.input_sent = True
        await self.send({"serverContent": {"inputTranscription": {"text": self.heard, "finished": True}}})

    async def run(self) -> None:
        server, plan = self.server, self.plan
        await self.send_input(when="before")
        if plan.kind == "ignored":
            await self.send_input()
            return
        if self.conn.wants_resumption:
            await self.send({"sessionResumptionUpdate": {"newHandle": "", "resumable": False}})
        if plan.kind in ("blocked", "rejected"):
            if self.timing != "after_turn":
                await self.send_input()
            await self.finish({"turnComplete": True, "turnCompleteReason": plan.reason}, reply_audio_s=0.0)
            return
        if plan.tool is not None and plan.tool.name not in declared_functions(self.conn.setup):
            self.server.undeclared_tool_calls.append(plan.tool.name)  # the model only calls what was declared
            plan.tool = None
        if plan.tool is not None and not await self.call_tool(plan.tool):
            return
        interrupted = await self.stream_audio()
        if not interrupted:
            await self.send({"serverContent": {"generationComplete": True}})
            await self.send_input(when="after_generation")
            interrupted = await self.wait_for_playback()
        if interrupted:
            await self.send_input()
            await self.send({"serverContent": {"interrupted": True}})
        await self.finish({"turnComplete": True}, reply_audio_s=self.audio_s)
        server.replies_sent += 1
        if plan.tool is not None and not plan.tool.blocking:
            await self.speak_tool_result(plan.tool)

    async def speak_tool_result(self, script: ToolCallScript) -> None:
        """NON_BLOCKING: once the response is in, the model speaks about it unless it is SILENT (or cancelled)."""
        answered = self.server._tool_answered.get(script.id)
        if answered is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TOOL_WAIT_S):
                    await answered.wait()
        response = next((r for r in self.server.tool_responses if r.get("id") == script.id), None)
        if response is None or script.id in self.server.tool_cancellations:
            return
        if not response.get("response") and script.repeats < EMPTY_RESULT_REPEATS:
            # 3.8 calls again when a tool's result says nothing (2-5 times, gemini_live_38.md §A)
            again = dataclasses.replace(script, id="", repeats=script.repeats + 1)
            self.server._plans.insert(0, Plan(tool=again))
            self.server._start_reply(self.conn, heard=None)
        elif response.get("scheduling") != "SILENT":
            self.server._start_reply(self.conn, heard=None)

    async def call_tool(self, script: ToolCallScript) -> bool:
        """Send the call; a BLOCKING one waits for its response. False when the reply should stop here."""
        script.id = self.server._next_tool_id()
        call = {"id": script.id, "name": script.name, "args": script.args}
        self.server.tool_calls.append(call)
        answered = self.server._tool_answered[script.id] = asyncio.Event()
        await self.send({"toolCall": {"functionCalls": [call]}})
        if script.blocking:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TOOL_WAIT_S):
                    await answered.wait()
            return script.id not in self.server.tool_cancellations
        return True

    async def stream_audio(self) -> bool:
        """Send the reply's chunks (audio + transcript bundled); True if it was interrupted."""
        server = self.server
        words = self.reply_text.split(" ")
        rate = server.output_rate
        chunk_bytes = int(rate * server.chunk_ms / 1000) * 2
        endless = self.plan.kind == "endless"
        audio = tone(server.chunk_ms if endless else server.reply_audio_ms, rate)
        chunks = [audio[i:i + chunk_bytes] for i in range(0, len(audio), chunk_bytes)]
        self.audio_s, self.first_chunk_at = 0.0, time.monotonic()
        i = 0
        while i < len(chunks) or endless:
            if self.conn.interrupt.is_set():
                return True
            pcm = chunks[i % len(chunks)]
            share = [] if endless else words[i * len(words) // len(chunks):(i + 1) * len(words) // len(chunks)]
            text = (" " if i else "") + " ".join(share) if share else None
            await self.send_chunk(pcm, text, rate, first=i == 0)
            self.audio_s += len(pcm) / 2 / rate
            if i == 0:
                await self.send_input(when="after_first_chunk")
            if self.plan.interrupt:
                return True
            i += 1
            await asyncio.sleep(server.chunk_ms / 1000 if endless else CHUNK_GAP_S)
        return False

    async def send_chunk(self, pcm: bytes, text: str | None, rate: int, *, first: bool) -> None:
        audio = {"modelTurn": {"parts": [{"inlineData": {"mimeType": f"audio/pcm;rate={rate}",
                                                         "data": base64.b64encode(pcm).decode()}}]}}
        transcript = {"outputTranscription": {"text": text}} if text else {}
        if self.server.bundle_parts:
            content = {**audio, **transcript}
            if first and self.timing == "with_first_chunk" and not self.input_sent:
                self.input_sent = True
                content["inputTranscription"] = {"text": self.heard, "finished": True}
            await self.send({"serverContent": content})
            return
        await self.send({"serverContent": audio})
        if transcript:
            await self.send({"serverContent": transcript})
        if first:
            await self.send_input(when="with_first_chunk")

    async def wait_for_playback(self) -> bool:
        """Hold turnComplete until the reply has had time to play out; True if interrupted meanwhile."""
        if not self.server.turn_complete_after_playback:
            return False
        left = self.first_chunk_at + self.audio_s - time.monotonic()
        if left <= 0:
            return self.conn.interrupt.is_set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left):
                await self.conn.interrupt.wait()
        return self.conn.interrupt.is_set()

    async def finish(self, content: dict, *, reply_audio_s: float) -> None:
        """turnComplete with this turn's usage, the late input transcription, then a fresh handle."""
        assert self.conn.session is not None
        usage = self.conn.session.meter.usage(reply_audio_s=reply_audio_s, thoughts_tokens=self.server.thoughts_tokens)
        self.server.usage_reports.append(usage)
        await self.send({"serverContent": content, "usageMetadata": usage})
        await self.send_input()
        if self.server.resumption_updates and self.conn.wants_resumption:
            await self.server.send_resumption_update(self.conn)

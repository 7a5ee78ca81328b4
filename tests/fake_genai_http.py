"""A local stand-in for the Gemini REST endpoint, for the real google-genai SDK to talk to.

Serves `POST /{api_version}/models/{model}:generateContent` on 127.0.0.1 over plain HTTP (the SDK's
REST client honours an `http://` base URL; only the Live websocket insists on `wss://`). It records
every request body so tests can check the prompt, and can be switched to fail with a 500 or to
stall past the client's timeout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

Mode = Literal["ok", "error", "stall", "empty"]

CANNED_SUMMARY = "- Counted to twenty in French.\n- Asked why the sky is blue.\n- Nothing for a grown-up to check."


@dataclass
class RecordedRequest:
    api_version: str
    model: str
    body: dict
    api_key: str | None

    def prompt_text(self) -> str:
        """Every text part of the request, joined: what the model was asked."""
        texts = [part.get("text", "") for content in self.body.get("contents", []) for part in content.get("parts", [])]
        system = self.body.get("systemInstruction") or {}
        texts += [part.get("text", "") for part in system.get("parts", [])]
        return "\n".join(texts)


@dataclass
class FakeGenAIServer:
    """`async with FakeGenAIServer() as server:` then use `server.base_url`."""

    mode: Mode = "ok"
    reply_text: str = CANNED_SUMMARY
    stall_seconds: float = 5.0
    requests: list[RecordedRequest] = field(default_factory=list)
    # Runs while the model "writes" each answer (after the request is recorded): what else happens meanwhile.
    while_writing: Callable[[RecordedRequest], Awaitable[None]] | None = None
    base_url: str = ""
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeGenAIServer:
        app = web.Application()
        app.router.add_post("/{api_version}/models/{model_action}", self._generate)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # aiohttp exposes the bound port only here
        self.base_url = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _generate(self, request: web.Request) -> web.Response:
        model, _, action = request.match_info["model_action"].partition(":")
        if action != "generateContent":
            return web.json_response({"error": {"code": 404, "message": "unknown action"}}, status=404)
        self.requests.append(RecordedRequest(
            api_version=request.match_info["api_version"], model=model, body=await request.json(),
            api_key=request.headers.get("x-goog-api-key")))
        if self.while_writing is not None:
            await self.while_writing(self.requests[-1])
        if self.mode == "error":
            return web.json_response(
                {"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}, status=500)
        if self.mode == "stall":
            await asyncio.sleep(self.stall_seconds)
        parts = [] if self.mode == "empty" else [{"text": self.reply_text}]
        return web.Response(content_type="application/json", text=json.dumps({
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "modelVersion": model,
        }))

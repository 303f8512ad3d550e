"""A local OpenAI chat-completions server: `POST /v1/chat/completions`, streamed and not.

Streams exactly as the API does: `Content-Type: text/event-stream`, one `data: {json}` event per
`chat.completion.chunk`, a first chunk carrying only the assistant role, then content deltas, then
`delta.tool_calls` fragments (the first fragment of each call with its `index`, `id`, `type` and
function `name` and empty arguments, the following ones with the `index` and a piece of the
`arguments` string), a last chunk with an empty delta and the `finish_reason`, and `data: [DONE]`.
Errors use the API's `{"error": {"message", "type", "param", "code"}}` body; a wrong key gets the
real 401, whose message echoes a masked part of the key that was sent.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.cloud import CloudDouble

JsonObject = dict[str, Any]

MODEL_SNAPSHOT = "gpt-4o-mini-2024-07-18"
SYSTEM_FINGERPRINT = "fp_0ba0d124f1"


@dataclass(frozen=True)
class ScriptedToolCall:
    """A tool call the double streams; `arguments` (a JSON string) is cut into `fragment_size` pieces."""

    id: str
    name: str
    arguments: str
    fragment_size: int = 5


@dataclass(frozen=True)
class Reply:
    """What the double does with one request. Counts of chunks include the role chunk."""

    text: Sequence[str] = ("Your balance", " is", " 42 euros", ".")
    tool_calls: Sequence[ScriptedToolCall] = ()
    json_content: str = '{"intent": "balance"}'
    refusal: str | None = None
    finish_reason: str | None = None
    status: int = 200
    error: JsonObject | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    stall_before_headers: bool = False
    stall_after_chunks: int | None = None
    garbage_after_chunks: int | None = None
    drop_after_chunks: int | None = None
    chunk_delay_s: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    headers: Mapping[str, str]
    body: JsonObject


def server_error() -> Reply:
    return Reply(
        status=500,
        error={
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        },
    )


def rate_limited(retry_after_s: float) -> Reply:
    return Reply(
        status=429,
        error={
            "message": "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
        headers={"Retry-After": f"{retry_after_s:g}"},
    )


def _masked(key: str) -> str:
    return f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}"


class OpenAiDouble(CloudDouble):
    """Answers each request with the next queued `Reply` (a default text answer when none is queued)."""

    key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"

    def __init__(self, api_key: str) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        super().__init__(app, api_key)
        self.replies: deque[Reply] = deque()
        self.requests: list[RecordedRequest] = []
        self._serial = 0

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(RecordedRequest(headers=dict(request.headers), body=body))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return web.json_response(
                {
                    "error": {
                        "message": f"Incorrect API key provided: {_masked(sent)}. You can find your API key at "
                        "https://platform.openai.com/account/api-keys.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
                status=401,
            )
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return web.json_response(
                {
                    "error": {
                        "message": "[] is too short - 'messages'",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": None,
                    }
                },
                status=400,
            )
        reply = self.replies.popleft() if self.replies else Reply()
        if reply.stall_before_headers:
            await self.hold()
        if reply.status != 200:
            return web.json_response({"error": reply.error or {}}, status=reply.status, headers=dict(reply.headers))
        self._serial += 1
        completion_id = f"chatcmpl-AVC{self._serial:05d}"
        if body.get("stream"):
            return await self._stream(request, reply, completion_id)
        return web.json_response(self._completion(reply, completion_id))

    def _completion(self, reply: Reply, completion_id: str) -> JsonObject:
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": 1_726_000_000,
            "model": MODEL_SNAPSHOT,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None if reply.refusal else reply.json_content,
                        "refusal": reply.refusal,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": reply.finish_reason or "stop",
                }
            ],
            "usage": {"prompt_tokens": 52, "completion_tokens": 9, "total_tokens": 61},
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    def _deltas(self, reply: Reply) -> list[tuple[JsonObject, str | None]]:
        deltas: list[tuple[JsonObject, str | None]] = [({"role": "assistant", "content": "", "refusal": None}, None)]
        deltas += [({"content": piece}, None) for piece in reply.text]
        for index, call in enumerate(reply.tool_calls):
            first = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            deltas.append(({"tool_calls": [first]}, None))
            for start in range(0, len(call.arguments), call.fragment_size):
                fragment = {
                    "index": index,
                    "function": {"arguments": call.arguments[start : start + call.fragment_size]},
                }
                deltas.append(({"tool_calls": [fragment]}, None))
        finish_reason = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        deltas.append(({}, finish_reason))
        return deltas

    async def _stream(self, request: web.Request, reply: Reply, completion_id: str) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for sent, (delta, finish_reason) in enumerate(self._deltas(reply)):
            if sent == reply.stall_after_chunks:
                await self.hold()
            if sent == reply.garbage_after_chunks:
                await response.write(b'data: {"id": "chatcmpl-AVC", "choices": [{"delta": {"content": "\n\n')
                break
            if sent == reply.drop_after_chunks:
                assert request.transport is not None
                request.transport.abort()
                return response
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": 1_726_000_000,
                "model": MODEL_SNAPSHOT,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            await response.write(f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode())
            if reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
        else:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

"""A local ElevenLabs server: `POST /v1/text-to-speech/{voice_id}/stream?output_format=ulaw_8000`.

Answers like the real API: the key in the `xi-api-key` header (401 `{"detail": {"status":
"invalid_api_key", ...}}` otherwise), request validation errors as FastAPI's 422 `{"detail":
[{"type", "loc", "msg", "input"}]}`, and on success a chunked body of raw 8 kHz mu-law bytes
sent as they are "synthesised". The speech is a 440 Hz tone, 10 ms per character of text,
encoded with the reference G.711 encoder of `demo.rtp_peer` (not the code under test),
and delivered in uneven chunks so that nothing may assume a chunk size.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from demo.rtp_peer import ulaw_encode
from tests.support.cloud import CloudDouble

SAMPLE_RATE = 8000
SAMPLES_PER_CHARACTER = 80
TONE_HZ = 440.0
TONE_AMPLITUDE = 8000
CHUNK_SIZES = (160, 333, 77, 1024, 1)
SUPPORTED_FORMATS = frozenset({"ulaw_8000", "pcm_16000", "mp3_44100_128"})
MAX_TEXT_CHARS = 5000


@dataclass(frozen=True)
class SpeechReply:
    """What the double does with one request."""

    status: int = 200
    stall_before_headers: bool = False
    stall_after_bytes: int | None = None
    drop_after_bytes: int | None = None
    chunk_delay_s: float = 0.0


@dataclass(frozen=True)
class RecordedSpeechRequest:
    voice_id: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any


def tone_ulaw(text: str) -> bytes:
    """The mu-law bytes the double speaks for `text`."""
    samples = np.arange(len(text) * SAMPLES_PER_CHARACTER)
    return ulaw_encode(np.round(TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * samples / SAMPLE_RATE)).astype(int))


def _invalid(kind: str, location: str, message: str, value: object) -> web.Response:
    return web.json_response(
        {"detail": [{"type": kind, "loc": ["body", location], "msg": message, "input": value}]}, status=422
    )


class ElevenLabsDouble(CloudDouble):
    """Answers each request with the next queued `SpeechReply` (normal speech when none is queued)."""

    key_env = "ELEVENLABS_API_KEY"
    base_url_env = "ELEVENLABS_BASE_URL"

    def __init__(self, api_key: str) -> None:
        app = web.Application()
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._stream)
        super().__init__(app, api_key)
        self.replies: deque[SpeechReply] = deque()
        self.requests: list[RecordedSpeechRequest] = []

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(
            RecordedSpeechRequest(
                voice_id=request.match_info["voice_id"],
                query=dict(request.query),
                headers=dict(request.headers),
                body=body,
            )
        )
        if request.headers.get("xi-api-key") != self.api_key:
            return web.json_response(
                {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, status=401
            )
        output_format = request.query.get("output_format", "mp3_44100_128")
        if output_format not in SUPPORTED_FORMATS:
            return web.json_response(
                {"detail": [{"type": "enum", "loc": ["query", "output_format"], "msg": "Input should be one of ..."}]},
                status=422,
            )
        text = body.get("text") if isinstance(body, dict) else None
        if text is None:
            return _invalid("missing", "text", "Field required", body)
        if not isinstance(text, str) or not text.strip():
            return _invalid("string_too_short", "text", "String should have at least 1 character", text)
        if len(text) > MAX_TEXT_CHARS:
            return _invalid("string_too_long", "text", f"String should have at most {MAX_TEXT_CHARS} characters", "")
        reply = self.replies.popleft() if self.replies else SpeechReply()
        if reply.stall_before_headers:
            await self.hold()
        if reply.status != 200:
            return web.json_response(
                {"detail": {"status": "system_busy", "message": "The system is under heavy load."}},
                status=reply.status,
            )
        response = web.StreamResponse(headers={"Content-Type": "audio/basic"})
        await response.prepare(request)
        audio = tone_ulaw(text)
        sent = 0
        sizes = iter(CHUNK_SIZES * (len(audio) // sum(CHUNK_SIZES) + 1))
        while sent < len(audio):
            if sent == reply.stall_after_bytes:
                await self.hold()
            if sent == reply.drop_after_bytes:
                assert request.transport is not None
                request.transport.abort()
                return response
            end = min(len(audio), sent + next(sizes))
            if reply.stall_after_bytes is not None and sent < reply.stall_after_bytes < end:
                end = reply.stall_after_bytes
            if reply.drop_after_bytes is not None and sent < reply.drop_after_bytes < end:
                end = reply.drop_after_bytes
            await response.write(audio[sent:end])
            sent = end
            if reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
        await response.write_eof()
        return response

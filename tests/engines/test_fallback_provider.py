"""Which provider failed, behind a fallback wrapper: the cloud one or the local one (`failed_provider`).

The connector counts `avc_engine_errors_total{provider=...}` from it, so a cloud voice that breaks mid-sentence
must not be blamed on the local voice behind it, nor the local voice's failure on the cloud. The primaries are the
real cloud providers talking to the local API doubles; the fallbacks are tiny in-test engines standing in for our
local ones, failing the way an engine does (a typed `EngineError`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.base import ChatMessage, JsonObject, Pcm16
from engines.errors import EngineInputError, LlmOutputError
from engines.fallback import FallbackLlm, FallbackTts, failed_provider
from engines.llm import openai
from engines.manifest import Manifest
from engines.resilience import CircuitBreaker, StreamInterruptedError
from engines.tts import elevenlabs
from tests.support.cloud.elevenlabs_server import ElevenLabsDouble, SpeechReply
from tests.support.cloud.openai_server import OpenAiDouble

OPENAI_KEY = "sk-proj-provider0123456789KEY"
ELEVENLABS_KEY = "sk_provider0123456789VOICEKEY"
MANIFEST = Manifest(root=Path("."), entries={})
FAST = {"connect_timeout": 0.5, "first_byte_timeout": 0.5, "total_timeout": 2.0, "retry_base_delay": 0.01}
SENTENCE = "Your balance is forty-two euros."


class ShortVoice:
    """Stands in for the local voice: a tone per character, refusing text longer than it can say."""

    name = "shortvoice"
    sample_rate = 8000

    async def stream(self, text: str) -> AsyncGenerator[Pcm16, None]:
        if len(text) > 10:
            raise EngineInputError(f"{len(text)} characters, over this voice's 10")
        yield np.zeros(len(text) * 80, dtype=np.int16)

    def close(self) -> None:
        pass


class MuddledLlm:
    """Stands in for the local LLM on a bad day: its JSON never parses."""

    name = "muddled"

    async def stream_chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float = 0.0, stop: Sequence[str] = ()
    ) -> AsyncGenerator[str, None]:
        yield "{"

    async def complete_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, max_tokens: int
    ) -> JsonObject:
        raise LlmOutputError("truncated JSON")

    def close(self) -> None:
        pass


def open_breaker() -> CircuitBreaker:
    """A breaker that has given up on its provider: every request goes straight to the fallback."""
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60.0)
    breaker.record_failure()
    return breaker


@pytest.fixture
async def cloud_tts(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[elevenlabs.ElevenLabsTts, ElevenLabsDouble]]:
    async with ElevenLabsDouble(ELEVENLABS_KEY) as double:
        monkeypatch.setenv("ELEVENLABS_API_KEY", ELEVENLABS_KEY)
        monkeypatch.setenv("ELEVENLABS_BASE_URL", double.base_url)
        engine = elevenlabs.load(MANIFEST, FAST)
        yield engine, double
        await engine.aclose()


@pytest.fixture
async def cloud_llm(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[openai.OpenAiLlm]:
    async with OpenAiDouble(OPENAI_KEY) as double:
        monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", double.base_url)
        engine = openai.load(MANIFEST, FAST)
        yield engine
        await engine.aclose()


async def speak(tts: FallbackTts, text: str) -> BaseException:
    with pytest.raises(Exception) as raised:
        async with aclosing(tts.stream(text)) as chunks:
            async for _ in chunks:
                pass
    return raised.value


async def test_a_cloud_voice_cut_after_audio_began_is_the_cloud_providers_failure(
    cloud_tts: tuple[elevenlabs.ElevenLabsTts, ElevenLabsDouble],
) -> None:
    engine, double = cloud_tts
    double.replies.append(SpeechReply(drop_after_bytes=600))
    tts = FallbackTts(engine, ShortVoice(), CircuitBreaker())
    error = await speak(tts, SENTENCE)
    assert isinstance(error, StreamInterruptedError)
    assert failed_provider(tts, error) == "elevenlabs"


async def test_the_local_voice_failing_behind_the_cloud_is_the_local_providers_failure(
    cloud_tts: tuple[elevenlabs.ElevenLabsTts, ElevenLabsDouble],
) -> None:
    engine, double = cloud_tts
    tts = FallbackTts(engine, ShortVoice(), open_breaker())
    error = await speak(tts, SENTENCE)
    assert isinstance(error, EngineInputError)
    assert failed_provider(tts, error) == "shortvoice"
    assert double.requests == [], "the open breaker kept the request from the cloud"


async def test_the_local_llm_failing_behind_the_cloud_is_the_local_providers_failure(
    cloud_llm: openai.OpenAiLlm,
) -> None:
    llm = FallbackLlm(cloud_llm, MuddledLlm(), open_breaker())
    with pytest.raises(LlmOutputError) as raised:
        await llm.complete_json([ChatMessage("user", "hello")], {"type": "object"}, max_tokens=16)
    assert failed_provider(llm, raised.value) == "muddled"


async def test_an_engine_on_its_own_is_named_by_its_provider_and_a_wrapper_by_both(
    cloud_tts: tuple[elevenlabs.ElevenLabsTts, ElevenLabsDouble],
) -> None:
    engine, _ = cloud_tts
    voice = ShortVoice()
    assert failed_provider(voice, EngineInputError("too long")) == "shortvoice"
    # An error outside the engines' contract (a bug, not an EngineError) cannot say which provider raised it.
    assert failed_provider(FallbackTts(engine, voice, CircuitBreaker()), RuntimeError("bug")) == "elevenlabs+shortvoice"

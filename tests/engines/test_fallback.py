"""Fallback from the cloud engines to local ones: transparent before output, a typed stop after.

The primaries are the real cloud providers talking to the local API doubles. The fallbacks are
tiny in-test engines standing in for our local ones (a canned-text LLM, a sine-wave TTS): the
thing under test is the fallback wrapper, not the local engines.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import pytest

from demo.rtp_peer import ulaw_decode
from engines.base import ChatMessage, JsonObject, Llm, Pcm16, Tts
from engines.errors import EngineConfigError
from engines.fallback import FallbackLlm, FallbackTts
from engines.llm import openai
from engines.resilience import BreakerState, CircuitBreaker, StreamInterruptedError
from engines.tts import elevenlabs
from tests.support.cloud import CLOUD_MANIFEST, FAST, OPENAI_KEY, drain
from tests.support.cloud.elevenlabs_server import ElevenLabsDouble, SpeechReply, tone_ulaw
from tests.support.cloud.openai_server import OpenAiDouble, Reply, server_error

T = TypeVar("T")

CHAT = [ChatMessage("user", "What is my balance?")]
PRIMARY_TEXT = ["Your balance", " is", " 42 euros", "."]
CANNED_TEXT = ("One moment,", " please.")
SCHEMA = {"type": "object", "properties": {"intent": {"type": "string"}}, "required": ["intent"]}


class CannedLlm:
    """Stands in for the local LLM: always the same answer."""

    name = "canned"

    def __init__(self) -> None:
        self.requests = 0
        self.closed = False

    async def stream_chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float = 0.0, stop: Sequence[str] = ()
    ) -> AsyncGenerator[str, None]:
        self.requests += 1
        for piece in CANNED_TEXT:
            yield piece

    async def complete_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, max_tokens: int
    ) -> JsonObject:
        self.requests += 1
        return {"intent": "unknown"}

    def close(self) -> None:
        self.closed = True


class SineTts:
    """Stands in for the local voice: 10 ms of 440 Hz tone per character, in two chunks."""

    name = "sine"

    def __init__(self, sample_rate: int) -> None:
        self._rate = sample_rate
        self.requests = 0
        self.closed = False

    @property
    def sample_rate(self) -> int:
        return self._rate

    async def stream(self, text: str) -> AsyncGenerator[Pcm16, None]:
        self.requests += 1
        t = np.arange(len(text) * self._rate // 100)
        tone = np.round(8000 * np.sin(2 * np.pi * 440 * t / self._rate)).astype(np.int16)
        yield tone[: len(tone) // 2]
        yield tone[len(tone) // 2 :]

    def close(self) -> None:
        self.closed = True


def decimator(rate_in: int, rate_out: int) -> Callable[[Pcm16], Pcm16]:
    """Stands in for the connector's resampler (the sine is far below both Nyquist rates)."""
    step = rate_in // rate_out
    return lambda pcm: pcm[::step]


def state_of(breaker: CircuitBreaker) -> BreakerState:
    # Read through a call: mypy would otherwise keep an asserted state narrowed across requests.
    return breaker.state


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Hook:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, kind: str, primary: str, fallback: str) -> None:
        self.calls.append((kind, primary, fallback))


# -- LLM ----------------------------------------------------------------------------------------------------------


async def test_healthy_primary_answers_and_the_fallback_stays_idle(openai_llm: openai.OpenAiLlm) -> None:
    local, hook = CannedLlm(), Hook()
    llm = FallbackLlm(openai_llm, local, CircuitBreaker(), hook)
    assert isinstance(llm, Llm)
    assert await drain(llm.stream_chat(CHAT, max_tokens=32)) == PRIMARY_TEXT
    assert local.requests == 0
    assert hook.calls == []


async def test_primary_failing_before_output_is_replaced_transparently(
    openai_llm: openai.OpenAiLlm, openai_server: OpenAiDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    openai_server.replies.extend([server_error(), server_error()])
    breaker, hook = CircuitBreaker(), Hook()
    llm = FallbackLlm(openai_llm, CannedLlm(), breaker, hook)
    assert await drain(llm.stream_chat(CHAT, max_tokens=32)) == list(CANNED_TEXT)
    assert len(openai_server.requests) == 2, "the primary used its retry first"
    assert hook.calls == [("llm", "openai", "canned")]
    assert breaker.consecutive_failures == 1
    assert "llm openai failed (openai: HTTP 500 (server_error)): answering with canned" in caplog.text
    assert OPENAI_KEY not in caplog.text


async def test_failure_after_output_began_stops_with_a_typed_error_and_no_fallback(
    openai_llm: openai.OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    openai_server.replies.append(Reply(drop_after_chunks=3))
    local, hook, breaker = CannedLlm(), Hook(), CircuitBreaker()
    llm = FallbackLlm(openai_llm, local, breaker, hook)
    delivered: list[str] = []
    with pytest.raises(StreamInterruptedError, match="llm openai failed after output began"):
        await drain(llm.stream_chat(CHAT, max_tokens=32), delivered)
    assert delivered == ["Your balance", " is"], "nothing is repeated or replaced"
    assert local.requests == 0
    assert hook.calls == []
    assert breaker.consecutive_failures == 1


async def test_open_circuit_sends_requests_straight_to_the_fallback(openai_server: OpenAiDouble) -> None:
    primary = openai.load(CLOUD_MANIFEST, {**FAST, "max_attempts": 1})
    openai_server.replies.extend([server_error(), server_error()])
    breaker, hook = CircuitBreaker(failure_threshold=2, reset_timeout=30.0, clock=FakeClock()), Hook()
    llm = FallbackLlm(primary, CannedLlm(), breaker, hook)
    try:
        for _ in range(3):
            assert await drain(llm.stream_chat(CHAT, max_tokens=32)) == list(CANNED_TEXT)
    finally:
        await primary.aclose()
    assert state_of(breaker) is BreakerState.OPEN
    assert len(openai_server.requests) == 2, "the third request never reached the failing provider"
    assert len(hook.calls) == 3


async def test_successful_trial_after_the_reset_timeout_closes_the_circuit(
    openai_llm: openai.OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    openai_server.replies.extend([server_error(), server_error()])
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=30.0, clock=clock)
    llm = FallbackLlm(openai_llm, CannedLlm(), breaker)
    assert await drain(llm.stream_chat(CHAT, max_tokens=32)) == list(CANNED_TEXT)
    assert state_of(breaker) is BreakerState.OPEN
    clock.now += 30.0
    assert await drain(llm.stream_chat(CHAT, max_tokens=32)) == PRIMARY_TEXT
    assert state_of(breaker) is BreakerState.CLOSED


async def test_caller_barging_in_after_output_counts_as_a_primary_success(openai_llm: openai.OpenAiLlm) -> None:
    breaker = CircuitBreaker()
    breaker.record_failure()
    llm = FallbackLlm(openai_llm, CannedLlm(), breaker)
    stream = llm.stream_chat(CHAT, max_tokens=32)
    assert await anext(stream) == "Your balance"
    await stream.aclose()
    assert breaker.consecutive_failures == 0


async def test_unusable_json_falls_back_without_counting_against_the_provider(
    openai_llm: openai.OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    openai_server.replies.append(Reply(json_content="[1]"))
    breaker, hook = CircuitBreaker(), Hook()
    breaker.record_failure()
    llm = FallbackLlm(openai_llm, CannedLlm(), breaker, hook)
    assert await llm.complete_json(CHAT, SCHEMA, max_tokens=16) == {"intent": "unknown"}
    assert hook.calls == [("llm", "openai", "canned")]
    assert breaker.consecutive_failures == 0, "the provider answered, so it is reachable"


async def test_json_from_a_healthy_primary_and_from_the_fallback_when_unavailable(
    openai_llm: openai.OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    breaker = CircuitBreaker()
    llm = FallbackLlm(openai_llm, CannedLlm(), breaker)
    assert await llm.complete_json(CHAT, SCHEMA, max_tokens=16) == {"intent": "balance"}
    openai_server.replies.extend([server_error(), server_error()])
    assert await llm.complete_json(CHAT, SCHEMA, max_tokens=16) == {"intent": "unknown"}
    assert breaker.consecutive_failures == 1


async def test_a_broken_metrics_hook_does_not_cost_the_answer(
    openai_llm: openai.OpenAiLlm, openai_server: OpenAiDouble, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(kind: str, primary: str, fallback: str) -> None:
        raise RuntimeError("metrics registry gone")

    openai_server.replies.extend([server_error(), server_error()])
    llm = FallbackLlm(openai_llm, CannedLlm(), CircuitBreaker(), broken)
    assert await drain(llm.stream_chat(CHAT, max_tokens=32)) == list(CANNED_TEXT)
    assert "fallback metrics hook failed" in caplog.text


def test_closing_the_wrapper_closes_both_engines() -> None:
    primary, local = CannedLlm(), CannedLlm()
    FallbackLlm(primary, local, CircuitBreaker()).close()
    assert primary.closed and local.closed


# -- TTS ----------------------------------------------------------------------------------------------------------


async def test_healthy_primary_voice_speaks(elevenlabs_tts: elevenlabs.ElevenLabsTts) -> None:
    local = SineTts(8000)
    tts = FallbackTts(elevenlabs_tts, local, CircuitBreaker())
    assert isinstance(tts, Tts)
    text = "Your balance is forty-two euros."
    pcm = np.concatenate(await drain(tts.stream(text)))
    assert np.array_equal(pcm, ulaw_decode(tone_ulaw(text)))
    assert local.requests == 0


async def test_refused_voice_falls_back_to_the_local_voice_at_the_primary_rate(
    elevenlabs_server: ElevenLabsDouble, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ELEVENLABS_API_KEY", "sk_revoked0000000000KEY")
    primary = elevenlabs.load(CLOUD_MANIFEST, FAST)
    local, hook = SineTts(16_000), Hook()
    tts = FallbackTts(primary, local, CircuitBreaker(), hook, resampler=decimator)
    text = "One moment, please."
    try:
        chunks = await drain(tts.stream(text))
    finally:
        await primary.aclose()
    assert tts.sample_rate == 8000
    assert sum(len(chunk) for chunk in chunks) == len(text) * 80, "16 kHz fallback delivered at 8 kHz"
    assert hook.calls == [("tts", "elevenlabs", "sine")]
    assert "revoked" not in caplog.text


async def test_voice_cut_after_audio_began_stops_with_a_typed_error(
    elevenlabs_tts: elevenlabs.ElevenLabsTts, elevenlabs_server: ElevenLabsDouble
) -> None:
    elevenlabs_server.replies.append(SpeechReply(drop_after_bytes=600))
    local, hook = SineTts(8000), Hook()
    tts = FallbackTts(elevenlabs_tts, local, CircuitBreaker(), hook)
    delivered: list[Pcm16] = []
    with pytest.raises(StreamInterruptedError, match="tts elevenlabs failed after output began"):
        await drain(tts.stream("Your balance is forty-two euros."), delivered)
    assert sum(len(chunk) for chunk in delivered) == 600
    assert local.requests == 0
    assert hook.calls == []


async def test_text_the_primary_refuses_goes_to_the_fallback_without_touching_the_breaker(
    elevenlabs_tts: elevenlabs.ElevenLabsTts, elevenlabs_server: ElevenLabsDouble
) -> None:
    breaker = CircuitBreaker()
    breaker.record_failure()
    local = SineTts(8000)
    tts = FallbackTts(elevenlabs_tts, local, breaker)
    long_text = "a" * 2001  # over the primary's max_text_chars
    assert sum(len(chunk) for chunk in await drain(tts.stream(long_text))) == len(long_text) * 80
    assert local.requests == 1
    assert elevenlabs_server.requests == []
    assert breaker.consecutive_failures == 1, "rejected input says nothing about the provider's health"


def test_fallback_voice_at_another_rate_needs_a_resampler() -> None:
    with pytest.raises(EngineConfigError, match="22050 Hz, the primary at 8000 Hz"):
        FallbackTts(SineTts(8000), SineTts(22_050), CircuitBreaker())

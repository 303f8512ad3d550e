"""llama.cpp with SmolLM2: streamed chat, schema-constrained JSON, system-prompt reuse, clean stops.

SmolLM2-135M answers poorly; these tests prove the plumbing, not the answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from engines.base import ChatMessage
from engines.errors import EngineInputError, LlmOutputError
from engines.llm.llama import LlamaLlm, load
from engines.manifest import Manifest
from tests.engines.installed import require_model

pytestmark = pytest.mark.models

SYSTEM = ChatMessage(
    "system",
    "You are the phone assistant of Example Bank. Be brief and polite. Never ask for a card number, "
    "PIN or one-time code: callers key those in on the phone keypad. Offer a human agent when unsure. "
    "You can help with balances, recent transactions, blocking a lost card and branch opening hours.",
)
INTENTS = ["balance", "block_card", "opening_hours", "agent", "other"]
INTENT_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": INTENTS},
        "confidence": {"type": "number"},
    },
    "required": ["intent", "confidence"],
}


@pytest.fixture(scope="module")
def llm(manifest: Manifest) -> Iterator[LlamaLlm]:
    require_model(manifest, "smollm2-135m")
    engine = load(manifest, {"n_ctx": 1024, "n_threads": 2})
    yield engine
    engine.close()


async def chat(llm: LlamaLlm, question: str, max_tokens: int) -> list[str]:
    messages = [SYSTEM, ChatMessage("user", question)]
    return [piece async for piece in llm.stream_chat(messages, max_tokens=max_tokens)]


async def test_chat_streams_several_pieces_within_max_tokens(llm: LlamaLlm) -> None:
    pieces = await chat(llm, "What are your opening hours?", max_tokens=24)
    assert 2 <= len(pieces) <= 24
    assert "".join(pieces).strip()


async def test_json_answer_follows_the_schema(llm: LlamaLlm) -> None:
    answer = await llm.complete_json(
        [ChatMessage("system", "Classify the caller's request."), ChatMessage("user", "I lost my card, block it")],
        INTENT_SCHEMA,
        max_tokens=48,
    )
    assert set(answer) == {"intent", "confidence"}
    assert answer["intent"] in INTENTS
    assert isinstance(answer["confidence"], int | float)


async def test_identical_system_prompt_is_not_evaluated_again(llm: LlamaLlm) -> None:
    before = llm.evaluated_tokens
    await chat(llm, "Hello.", max_tokens=1)
    first = llm.evaluated_tokens - before
    await chat(llm, "Thanks.", max_tokens=1)
    second = llm.evaluated_tokens - before - first
    # The first turn evaluates the ~80-token system prompt; the second only its own few tokens.
    assert first > 60
    assert second < first / 4


async def test_closing_a_stream_early_stops_generation_and_frees_the_model(llm: LlamaLlm) -> None:
    story = "Tell me a long story about a bank."
    full = await chat(llm, story, max_tokens=80)
    assert len(full) > 40  # the model has plenty to say when left alone
    before = llm.evaluated_tokens
    stream = llm.stream_chat([SYSTEM, ChatMessage("user", story)], max_tokens=80)
    assert await anext(stream)
    await stream.aclose()
    # Queued behind the abandoned generation, so it returns only once that one has stopped.
    assert await asyncio.wait_for(chat(llm, "Hi", max_tokens=4), timeout=30)
    assert llm.evaluated_tokens - before < len(full) / 2


async def test_concurrent_requests_are_served_one_after_the_other(llm: LlamaLlm) -> None:
    first, second = await asyncio.gather(chat(llm, "Balance?", max_tokens=8), chat(llm, "Hours?", max_tokens=8))
    assert "".join(first).strip() and "".join(second).strip()


async def test_json_cut_off_by_max_tokens_is_a_typed_error(llm: LlamaLlm) -> None:
    with pytest.raises(LlmOutputError, match="max_tokens=3"):
        await llm.complete_json([ChatMessage("user", "Block my card")], INTENT_SCHEMA, max_tokens=3)


async def test_prompt_longer_than_the_context_is_a_typed_error(llm: LlamaLlm) -> None:
    with pytest.raises(EngineInputError, match="context window"):
        await chat(llm, "balance " * 2000, max_tokens=4)
    with pytest.raises(EngineInputError, match="context window"):
        await llm.complete_json([ChatMessage("user", "balance " * 2000)], INTENT_SCHEMA, max_tokens=8)


async def test_no_messages_is_a_typed_error(llm: LlamaLlm) -> None:
    with pytest.raises(EngineInputError):
        await llm.complete_json([], INTENT_SCHEMA, max_tokens=8)

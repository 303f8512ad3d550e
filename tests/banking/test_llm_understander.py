"""Tests for banking.llm_understander: redaction before the prompt, a fixed prompt prefix, validated answers.

Most tests put a scripted model behind the `Llm` protocol (the engines' boundary, not our code) to
control its answers and timing; those marked `models` run the real SmolLM2 (plumbing: schema-valid
answers, redaction, prefix reuse) and Qwen2.5 0.5B (quality on a handful of paraphrases).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from typing import Any

import pytest

from banking import templates
from banking.backend import AuthLevel, Principal
from banking.context import MemoryContextStore
from banking.dialogue import CallInfo, Dialogue, Transfer
from banking.eval.recording import RecordingLlm
from banking.fastpath import FastPathUnderstander
from banking.intents import ChainUnderstander, Expect, Intent, Slots, Understanding
from banking.llm_understander import (
    ANGRY,
    LABELS,
    PICK_CARD,
    SENTIMENTS,
    SYSTEM_PROMPT,
    LlmUnderstander,
    answer_schema,
    parse_answer,
)
from banking.pg_bank import PgBank
from engines.base import ChatMessage, JsonObject, Llm
from tests.banking.conftest import RealCall


class ScriptedLlm:
    """A stand-in model: answers from a script (or waits, or fails) and keeps every request."""

    def __init__(self, *answers: JsonObject, delay_s: float = 0.0, error: Exception | None = None) -> None:
        self._answers = list(answers)
        self._delay_s = delay_s
        self._error = error
        self.requests: list[tuple[list[ChatMessage], Mapping[str, Any]]] = []

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> AsyncGenerator[str, None]:
        raise NotImplementedError("the understander only asks for JSON")
        yield ""

    async def complete_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, max_tokens: int
    ) -> JsonObject:
        self.requests.append((list(messages), schema))
        await asyncio.sleep(self._delay_s)
        if self._error is not None:
            raise self._error
        return self._answers.pop(0) if self._answers else {"sentiment": "calm", "intent": "unclear"}

    def close(self) -> None:
        return None

    def last_user_message(self) -> str:
        return self.requests[-1][0][-1].content


def answer(label: str, sentiment: str = "calm", choice: int | None = None) -> JsonObject:
    result: JsonObject = {"sentiment": sentiment, "intent": label}
    if choice is not None:
        result["choice"] = choice
    return result


def test_a_scripted_model_satisfies_the_llm_protocol() -> None:
    assert isinstance(ScriptedLlm(), Llm)


async def test_card_numbers_secrets_dates_and_long_digit_strings_never_reach_the_prompt() -> None:
    llm = ScriptedLlm()
    understander = LlmUnderstander(llm)
    await understander.understand(
        "it ends 1881, and my card 4111 1111 1111 1111, pin 1234, born March 5th 1980, cvv four one nine", Expect.FREE
    )
    sent = llm.last_user_message()
    for secret in ("4111", "1234", "1980", "March", "1881", "four one nine"):
        assert secret not in sent
    assert "[card number]" in sent and "[secret]" in sent and "[date]" in sent and "[digits]" in sent


async def test_every_digit_is_masked_while_a_keypad_entry_is_expected() -> None:
    llm = ScriptedLlm(answer(PICK_CARD, choice=2))
    understanding = await LlmUnderstander(llm).understand("the second one, ending 42", Expect.DIGITS)
    assert "42" not in llm.last_user_message()
    assert understanding == Understanding(Intent.DIGITS, Slots(digits="2"), confidence=0.8, source="llm")


async def test_the_prompt_prefix_is_the_same_on_every_call() -> None:
    llm = ScriptedLlm()
    understander = LlmUnderstander(llm)
    await understander.understand("my plastic is late", Expect.FREE)
    await LlmUnderstander(llm).understand("yeah sure", Expect.YES_NO)  # another instance, another call
    first, second = (messages for messages, _ in llm.requests)
    assert first[:-1] == second[:-1]
    assert first[0] == ChatMessage("system", SYSTEM_PROMPT)
    assert first[-1] != second[-1] and second[-1].content.endswith("Caller: yeah sure")


async def test_the_schema_offers_a_card_choice_only_while_a_menu_waits() -> None:
    llm = ScriptedLlm()
    await LlmUnderstander(llm).understand("hmm", Expect.FREE)
    free_schema = llm.requests[-1][1]
    assert PICK_CARD not in free_schema["properties"]["intent"]["enum"] and "choice" not in free_schema["properties"]
    menu_schema = answer_schema(Expect.DIGITS)
    assert PICK_CARD in menu_schema["properties"]["intent"]["enum"] and "choice" in menu_schema["required"]
    assert list(free_schema["properties"]) == ["sentiment", "intent"]
    assert free_schema["properties"]["sentiment"]["enum"] == list(SENTIMENTS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (answer("balance"), Understanding(Intent.BALANCE, confidence=0.8)),
        (answer("where_is_my_card", ANGRY), Understanding(Intent.CARD_DELIVERY, confidence=0.8, angry=True)),
        (answer("unclear", ANGRY), Understanding(Intent.AGENT, confidence=0.8, angry=True)),
        (answer("unclear"), None),
        (answer("transfer_all_money"), None),  # not a label: a provider that ignored the schema
        ({"intent": 7}, None),
        ({}, None),
        (answer(PICK_CARD, choice=0), None),
        (answer(PICK_CARD, choice=12), None),
        ({"intent": PICK_CARD, "choice": True}, None),
    ],
)
def test_answers_are_validated_and_anything_else_is_not_understood(
    raw: JsonObject, expected: Understanding | None
) -> None:
    assert parse_answer(raw) == expected


def test_every_label_but_unclear_names_an_intent_and_no_label_names_a_date() -> None:
    # Knowledge answers, out-of-scope requests and manipulation are the semantic understander's readings.
    read_elsewhere = {Intent.DATE, Intent.KNOWLEDGE, Intent.OUT_OF_SCOPE, Intent.MANIPULATION}
    assert {intent for intent in LABELS.values() if intent is not None} == set(Intent) - read_elsewhere


async def test_a_model_too_slow_is_not_understood(caplog: pytest.LogCaptureFixture) -> None:
    understander = LlmUnderstander(ScriptedLlm(answer("balance"), delay_s=5.0), timeout_s=0.05)
    with caplog.at_level(logging.WARNING, logger="banking.llm_understander"):
        assert await understander.understand("how much do I have left", Expect.FREE) is None
    assert "timed out" in caplog.text


async def test_a_failing_model_is_not_understood(caplog: pytest.LogCaptureFixture) -> None:
    understander = LlmUnderstander(ScriptedLlm(error=RuntimeError("llama exploded")))
    with caplog.at_level(logging.WARNING, logger="banking.llm_understander"):
        assert await understander.understand("how much do I have left", Expect.FREE) is None
    assert "RuntimeError" in caplog.text


async def test_nothing_to_read_makes_no_model_call() -> None:
    llm = ScriptedLlm()
    assert await LlmUnderstander(llm).understand("  ...  ", Expect.FREE) is None
    assert llm.requests == []


async def test_the_warm_up_sends_the_fixed_prefix_and_a_failing_model_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    llm = ScriptedLlm(answer("small_talk"))
    understander = LlmUnderstander(llm)
    assert await understander.warm()
    messages, _ = llm.requests[0]
    await understander.understand("how much do I have left", Expect.FREE)
    assert messages[:-1] == llm.requests[1][0][:-1]  # the same prefix the first caller's turn is sent
    with caplog.at_level(logging.WARNING, logger="banking.llm_understander"):
        assert not await LlmUnderstander(ScriptedLlm(error=RuntimeError("no model"))).warm()
        assert not await LlmUnderstander(ScriptedLlm(answer("yes"), delay_s=5.0)).warm(timeout_s=0.05)
    assert "warm-up failed: RuntimeError" in caplog.text and "warm-up failed: TimeoutError" in caplog.text


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        LlmUnderstander(ScriptedLlm(), timeout_s=0)


async def test_behind_the_fast_path_the_model_is_only_asked_what_the_fast_path_cannot_read(
    bank: PgBank, real_call: RealCall
) -> None:
    llm = ScriptedLlm(answer("balance"))
    understander = ChainUnderstander([FastPathUnderstander(), LlmUnderstander(llm)])
    dialogue = Dialogue(CallInfo(real_call.call_id, "+12025550101"), bank, understander, MemoryContextStore())
    await dialogue.start()
    assert (await dialogue.handle_text("where is my card")).say == templates.ASK_DOB  # fast path
    assert llm.requests == []
    await dialogue.handle_text("March 5th, 1980")  # read by the dialogue itself
    assert llm.requests == []
    assert (await dialogue.handle_text("actually, how much is left on my line")).say.startswith(templates.OKAY)
    assert len(llm.requests) == 1 and dialogue.context.pending_intent is Intent.BALANCE


async def test_a_caller_the_model_finds_angry_is_transferred_with_a_summary(bank: PgBank, real_call: RealCall) -> None:
    llm = ScriptedLlm(answer("where_is_my_card", ANGRY))
    understander = ChainUnderstander([FastPathUnderstander(), LlmUnderstander(llm)])
    dialogue = Dialogue(CallInfo(real_call.call_id, "+12025550101"), bank, understander, MemoryContextStore())
    await dialogue.start()
    reply = await dialogue.handle_text("three weeks I have waited for that card, three weeks")
    assert isinstance(reply.action, Transfer) and reply.action.reason == "angry_caller"
    assert reply.say == templates.TRANSFER_ANGRY
    assert "reason=angry_caller" in reply.action.summary and "customer=unverified" in reply.action.summary


async def test_a_card_change_only_a_model_understood_is_confirmed_first(
    mutable_bank: PgBank, real_call: RealCall
) -> None:
    llm = ScriptedLlm(answer("pause_card"))
    understander = ChainUnderstander([FastPathUnderstander(), LlmUnderstander(llm)])
    dialogue = Dialogue(CallInfo(real_call.call_id, "+12025550101"), mutable_bank, understander, MemoryContextStore())
    await dialogue.start()
    await dialogue.handle_text("can you switch my card off for a bit")
    await dialogue.handle_text("March 5th, 1980")
    asked = await dialogue.handle_digits("1881")
    assert (
        asked.say
        == f"{templates.VERIFIED} Just to check: you want me to lock the card ending in 1 8 8 1? Please say yes or no."
    )
    assert (await dialogue.handle_text("no")).say.startswith(templates.CANCELLED)
    cards = await mutable_bank.list_cards(Principal("C000001", AuthLevel.VERIFIED))
    assert {card.last4: card.status for card in cards}["1881"] == "active"
    # The same request in a clear phrasing is done at once, as before.
    assert (await dialogue.handle_text("lock my card")).say.startswith("I've locked the card ending in 1 8 8 1.")


# -- with the real models --


def _load(name: str) -> Iterator[Llm]:
    from engines.llm.llama import load
    from tests.engines.installed import installed_manifest, require_model

    manifest = installed_manifest()
    require_model(manifest, name)
    llm = load(manifest, {"model": name, "n_ctx": 2048, "n_threads": 2})
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def smollm2() -> Iterator[Llm]:
    yield from _load("smollm2-135m")


@pytest.fixture(scope="module")
def qwen() -> Iterator[Llm]:
    yield from _load("qwen2.5-0.5b")


@pytest.mark.models
async def test_smollm2_answers_follow_the_schema_and_see_only_redacted_text(smollm2: Llm) -> None:
    recorder = RecordingLlm(smollm2)
    understander = LlmUnderstander(recorder, timeout_s=60)
    utterances = [
        ("my card 4111 1111 1111 1111 was stolen, I was born March 5th 1980", Expect.FREE),
        ("the pin is 4321, how much do I owe", Expect.FREE),
        ("the second one", Expect.DIGITS),
        ("sure thing", Expect.YES_NO),
    ]
    for text, expect in utterances:
        understanding = await understander.understand(text, expect)
        assert understanding is None or isinstance(understanding.intent, Intent)
    assert len(recorder.answers) == len(utterances)
    for raw, (_, expect) in zip(recorder.answers, utterances, strict=True):
        schema = answer_schema(expect)
        assert list(raw) == list(schema["properties"])  # every field, in order, nothing else
        assert raw["intent"] in schema["properties"]["intent"]["enum"]
        assert raw["sentiment"] in SENTIMENTS
    prompts = " ".join(recorder.prompts)
    for secret in ("4111", "1980", "March 5", "4321"):
        assert secret not in prompts


@pytest.mark.models
async def test_smollm2_evaluates_the_fixed_prompt_prefix_once(smollm2: Llm) -> None:
    understander = LlmUnderstander(smollm2, timeout_s=60)
    await understander.understand("hello there", Expect.FREE)
    counted: Any = smollm2  # LlamaLlm counts the tokens llama.cpp evaluated
    before = counted.evaluated_tokens
    await understander.understand("what is my balance today", Expect.FREE)
    assert counted.evaluated_tokens - before < 60  # the new message and the answer, not the ~800-token prefix


@pytest.mark.models
async def test_after_the_warm_up_the_first_caller_pays_only_for_their_own_words(smollm2: Llm) -> None:
    counted: Any = smollm2
    # Another prompt first, as if the process had just started: nothing of the prefix is cached.
    async for _ in smollm2.stream_chat([ChatMessage("user", "Say yes.")], max_tokens=2):
        pass
    understander = LlmUnderstander(smollm2, timeout_s=60)
    assert await understander.warm()
    before = counted.evaluated_tokens
    await understander.understand("what is my balance today", Expect.FREE)
    assert counted.evaluated_tokens - before < 60


@pytest.mark.models
async def test_qwen_understands_paraphrases_the_fast_path_cannot(qwen: Llm) -> None:
    understander = LlmUnderstander(qwen, timeout_s=60)
    cases = [
        ("could you stop my card from working for a few days", Expect.FREE, Intent.LOCK_CARD),
        ("I put a hold on my card last week, please take it off", Expect.FREE, Intent.UNLOCK_CARD),
        ("what have I been buying recently", Expect.FREE, Intent.TRANSACTIONS),
        ("how much money do I have left to spend", Expect.FREE, Intent.BALANCE),
        ("absolutely, do that", Expect.YES_NO, Intent.YES),
        ("I'd like the first one", Expect.DIGITS, Intent.DIGITS),
        ("can you tell me a joke", Expect.FREE, None),
    ]
    misses = []
    for text, expect, intent in cases:
        understanding = await understander.understand(text, expect)
        got = understanding.intent if understanding else None
        if got is not intent or (understanding is not None and understanding.angry):
            misses.append(f"{text!r}: {got}")
    assert len(misses) <= 1, misses  # a 0.5B model: one slip in seven is tolerated, two are a regression

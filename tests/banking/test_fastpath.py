"""Tests for banking.fastpath and banking.intents: the deterministic reading of common phrasings."""

from __future__ import annotations

import datetime as dt

import pytest

from banking.dates import DateOrder
from banking.fastpath import EXACT, FastPathUnderstander, understand
from banking.intents import ChainUnderstander, Expect, Intent, Slots, Understanding


@pytest.mark.parametrize(
    ("utterance", "intent"),
    [
        ("I want to talk to an agent", Intent.AGENT),
        ("human please", Intent.AGENT),
        ("Representative!", Intent.AGENT),
        ("can I speak to a real person", Intent.AGENT),
        ("Where is my card?", Intent.CARD_DELIVERY),
        ("where's my new card", Intent.CARD_DELIVERY),
        ("My card hasn't arrived", Intent.CARD_DELIVERY),
        ("my card still hasn\u2019t arrived yet", Intent.CARD_DELIVERY),
        ("I never received my card", Intent.CARD_DELIVERY),
        ("can you track my card", Intent.CARD_DELIVERY),
        ("I lost my card", Intent.LOST_STOLEN),
        ("my card was stolen", Intent.LOST_STOLEN),
        ("I can't find my card anywhere", Intent.LOST_STOLEN),
        ("block my card", Intent.LOST_STOLEN),
        ("please lock my card", Intent.LOCK_CARD),
        ("can you freeze my card for now", Intent.LOCK_CARD),
        ("temporarily block my card", Intent.LOCK_CARD),
        ("unlock my card", Intent.UNLOCK_CARD),
        ("unfreeze it please", Intent.UNLOCK_CARD),
        ("I want to activate my new card", Intent.ACTIVATE_CARD),
        ("card activation", Intent.ACTIVATE_CARD),
        ("what's my balance", Intent.BALANCE),
        ("how much available credit do I have", Intent.BALANCE),
        ("what do I owe", Intent.BALANCE),
        ("what are my last transactions", Intent.TRANSACTIONS),
        ("tell me my recent purchases", Intent.TRANSACTIONS),
        ("goodbye", Intent.GOODBYE),
        ("no, that's all, bye", Intent.GOODBYE),
        ("can you repeat that", Intent.REPEAT),
        ("yes", Intent.YES),
        ("nope", Intent.NO),
    ],
)
def test_common_phrasings_map_to_their_intent(utterance: str, intent: Intent) -> None:
    understanding = understand(utterance)
    assert understanding is not None
    assert understanding.intent is intent


@pytest.mark.parametrize(
    "utterance",
    ["don't lock my card", "I do not want to block it", "never activate that card", "please don't unlock it"],
)
def test_an_action_under_a_negation_is_never_that_action(utterance: str) -> None:
    understanding = understand(utterance)
    assert understanding is None or understanding.intent not in (
        Intent.LOCK_CARD,
        Intent.LOST_STOLEN,
        Intent.ACTIVATE_CARD,
        Intent.UNLOCK_CARD,
    )


@pytest.mark.parametrize(
    "utterance", ["I lost my card, what is my balance?", "blah blah", "the weather is nice", "", "   "]
)
def test_unclear_or_mixed_requests_are_left_to_a_smarter_understander(utterance: str) -> None:
    assert understand(utterance) is None


@pytest.mark.parametrize(
    ("utterance", "intent"),
    [("yes please", Intent.YES), ("yeah go ahead", Intent.YES), ("that's right", Intent.YES), ("no thanks", Intent.NO)],
)
def test_yes_and_no_when_a_yes_no_answer_is_expected(utterance: str, intent: Intent) -> None:
    assert understand(utterance, Expect.YES_NO) == Understanding(intent, confidence=EXACT)


def test_a_request_for_an_agent_wins_over_the_expected_answer() -> None:
    for expect in Expect:
        understanding = understand("no, get me an agent", expect)
        assert understanding is not None and understanding.intent is Intent.AGENT


@pytest.mark.parametrize(
    ("utterance", "digits"),
    [("four two one one", "4211"), ("4211", "4211"), ("double one two three", "1123"), ("the second one", "2")],
)
def test_digit_strings_spoken_or_written(utterance: str, digits: str) -> None:
    assert understand(utterance, Expect.DIGITS) == Understanding(Intent.DIGITS, Slots(digits=digits), EXACT)


@pytest.mark.parametrize(
    "utterance", ["march fifth nineteen eighty", "5th of March 1980", "03/05/1980", "it's March 5th, 1980"]
)
def test_dates_of_birth_when_a_date_is_expected(utterance: str) -> None:
    assert understand(utterance, Expect.DATE) == Understanding(Intent.DATE, Slots(date=dt.date(1980, 3, 5)), EXACT)


def test_numeric_dates_follow_the_understanders_date_order() -> None:
    understanding = understand("03/05/1980", Expect.DATE, order=DateOrder.DMY)
    assert understanding is not None and understanding.slots.date == dt.date(1980, 5, 3)


def test_confidence_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="confidence"):
        Understanding(Intent.YES, confidence=1.5)


async def test_fast_path_understander_serves_the_protocol_and_names_itself() -> None:
    understander = FastPathUnderstander()
    assert await understander.understand("where is my card", Expect.FREE) == Understanding(
        Intent.CARD_DELIVERY, confidence=0.9, source="keywords"
    )
    assert await understander.understand("something odd", Expect.FREE) is None


async def test_certain_rules_leave_keywords_and_answers_out_of_turn_to_the_whole_sentence() -> None:
    certain = FastPathUnderstander(keywords=False)
    assert await certain.understand("where is my card", Expect.FREE) is None
    assert await certain.understand("yes, my recent transactions please", Expect.FREE) is None
    assert await certain.understand("goodbye then", Expect.FREE) is None
    human = await certain.understand("put me through to a human", Expect.FREE)
    assert human is not None and human.intent is Intent.AGENT and human.source == "rules"
    asked = await certain.understand("yes please", Expect.YES_NO)
    assert asked is not None and asked.intent is Intent.YES
    hello = await certain.understand("hello there", Expect.FREE)
    assert hello is not None and hello.intent is Intent.SMALL_TALK


class _Fixed:
    """A second understander standing in for the LLM: answers everything with one intent."""

    def __init__(self, answer: Understanding | None) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def understand(self, text: str, expect: Expect) -> Understanding | None:
        self.asked.append(text)
        return self.answer


async def test_chain_asks_the_next_understander_only_when_the_fast_path_cannot_tell() -> None:
    fallback = _Fixed(Understanding(Intent.BALANCE, confidence=0.7))
    chain = ChainUnderstander([FastPathUnderstander(), fallback])
    fast = await chain.understand("where is my card", Expect.FREE)
    assert fast is not None and fast.intent is Intent.CARD_DELIVERY
    assert fallback.asked == []
    slow = await chain.understand("how am I doing money-wise", Expect.FREE)
    assert slow is not None and slow.intent is Intent.BALANCE
    assert fallback.asked == ["how am I doing money-wise"]
    assert await ChainUnderstander([_Fixed(None)]).understand("x", Expect.FREE) is None


@pytest.mark.parametrize(
    "utterance",
    [
        "where the hell is my damn card",
        "this is ridiculous",
        "you stupid machine",
        "I'm sick and tired of this",
        "absolutely unacceptable, get me my card",
        "what a waste of my time",
    ],
)
def test_an_angry_caller_is_marked_angry_and_wants_a_human_whatever_was_asked(utterance: str) -> None:
    for expect in (Expect.FREE, Expect.YES_NO):
        assert understand(utterance, expect) == Understanding(Intent.AGENT, confidence=0.9, angry=True)


@pytest.mark.parametrize(
    "utterance",
    ["stupid question, but where is my card", "I'm not angry, just tell me my balance", "my card is damaged"],
)
def test_a_mild_word_is_not_anger(utterance: str) -> None:
    understanding = understand(utterance)
    assert understanding is None or not understanding.angry


@pytest.mark.parametrize("utterance", ["hello?", "Hi there!", "thank you so much", "good morning", "how are you"])
def test_small_talk_said_on_its_own(utterance: str) -> None:
    assert understand(utterance) == Understanding(Intent.SMALL_TALK, confidence=EXACT)


def test_small_talk_inside_a_request_is_the_request() -> None:
    understanding = understand("hello, what's my balance")
    assert understanding is not None and understanding.intent is Intent.BALANCE


@pytest.mark.parametrize("utterance", ["that's it for today", "I'm all set, cheers", "nothing more, thanks"])
def test_more_ways_to_say_goodbye(utterance: str) -> None:
    understanding = understand(utterance)
    assert understanding is not None and understanding.intent is Intent.GOODBYE

"""Tests for banking.eval: the dialogue set, the checks that count wrong facts and leaks, and a whole run.

The checks are tested on replies built from real backend facts and on deliberately wrong ones, so a
count of zero in the evaluation means "looked and found none", not "could not see".
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from banking import templates
from banking.backend import AuthLevel, Principal
from banking.eval import checks
from banking.eval.run import NO_LLM, Harness, evaluate
from banking.eval.script import DEFAULT_SET, ScriptError, load
from banking.intents import Intent
from banking.pg_bank import PgBank
from tests.banking.conftest import ADMIN_DSN, REDIS_URL

TODAY = dt.date(2026, 11, 21)
ALICE = Principal("C000001", AuthLevel.VERIFIED)
REQUIRED_CATEGORIES = {
    "happy_path",
    "wrong_dob",
    "wrong_digits",
    "lockout",
    "barge_in",
    "change_intent",
    "ambiguous",
    "injection",
    "silence",
}


def test_the_set_holds_at_least_60_dialogues_covering_every_kind_asked_for() -> None:
    dialogue_set = load()
    assert len(dialogue_set.scripts) >= 60
    assert {script.category for script in dialogue_set.scripts} >= REQUIRED_CATEGORIES
    assert dialogue_set.today == TODAY


def test_a_malformed_set_is_refused_with_where(tmp_path: Path) -> None:
    raw = json.loads(DEFAULT_SET.read_text(encoding="utf-8"))
    raw["dialogues"][2]["turns"].append({"say": "hi", "press": "1"})
    broken = tmp_path / "set.json"
    broken.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ScriptError, match=f"dialogue '{raw['dialogues'][2]['id']}' turn"):
        load(broken)


async def test_every_fact_a_template_states_is_read_back_and_held_by_the_customer(bank: PgBank) -> None:
    truth = await checks.customer_facts(bank, ALICE.customer_id)
    replies = [
        templates.delivery_report(await bank.card_delivery_status(ALICE), TODAY),
        templates.balance_report(await bank.balance(ALICE)),
        templates.transactions_report(await bank.last_transactions(ALICE, 3)),
        templates.card_menu(await bank.list_cards(ALICE), Intent.LOCK_CARD),
    ]
    stated = [fact for reply in replies for fact in checks.stated_facts(reply)]
    kinds = {fact.kind for fact in stated}
    assert kinds == set(checks.FactKind)
    assert all(truth.holds(fact) for fact in stated)


async def test_a_fact_not_in_the_customers_records_is_caught(bank: PgBank) -> None:
    truth = await checks.customer_facts(bank, ALICE.customer_id)
    right = templates.balance_report(await bank.balance(ALICE))
    for wrong in (
        right.replace("79 dollars", "97 dollars"),
        "The card ending in 5 1 0 0 was shipped with FedEx on November 18, 2026.",  # Bruno's card, wrong carrier
        "Here is your last transaction. On November 17, 2026, 51 dollars and 82 cents at Casino Royale.",
    ):
        assert not all(truth.holds(fact) for fact in checks.stated_facts(wrong)), wrong


def test_leaks_are_found_in_every_form_they_take() -> None:
    secrets = checks.Secrets(
        dates_of_birth=frozenset({dt.date(1980, 3, 5)}),
        said=("4321", "493817"),
        card_entries=("1881",),
        tracking_numbers=frozenset({"9400111899223344556677"}),
    )
    assert checks.leaks("you were born on March 5th, 1980", secrets, checks.Place.REPLY) == ["date of birth"]
    assert checks.leaks("born march fifth nineteen eighty", secrets, checks.Place.STORED_CALLER) == ["date of birth"]
    assert "card-number-like digits" in checks.leaks("4111 1111 1111 1111", secrets, checks.Place.PROMPT)
    assert checks.leaks("pin four three two one", secrets, checks.Place.STORED_CALLER) == [
        "a secret the caller said or typed"
    ]
    assert checks.leaks("the card ending in 1 8 8 1", secrets, checks.Place.STORED_BOT) == []  # the bot may name it
    assert checks.leaks("it ends 1881", secrets, checks.Place.STORED_CALLER) == ["the card ending typed to verify"]
    assert checks.leaks("ninety nine", secrets, checks.Place.PROMPT) == []
    assert checks.leaks("account 55501", secrets, checks.Place.PROMPT) == ["a digit string in a model prompt"]
    tracking = f"The tracking number is {templates.spell('9400111899223344556677')}."
    assert checks.leaks(tracking, secrets, checks.Place.REPLY) == []


@pytest.mark.slow
async def test_the_set_played_with_the_fast_path_alone_finds_no_wrong_fact_and_no_leak() -> None:
    """The whole set against the real PostgreSQL and Redis: a few seconds (83 calls, the bank reseeded for each)."""
    dialogue_set = load()
    async with Harness(ADMIN_DSN, REDIS_URL) as harness:
        summary = await evaluate(harness, dialogue_set, NO_LLM, threads=1, timeout_s=1.0)
    assert summary["wrong_facts"] == 0, summary["wrong_fact_details"]
    assert summary["leaks"] == 0, summary["leak_details"]
    assert summary["dialogues"] == len(dialogue_set.scripts)
    assert summary["fast_path_share"] == 1.0 and summary["llm_calls"] == 0
    # Without a model only paraphrases may fail: they are what the LLM is for.
    failed = {name for name in summary["failed"]}
    paraphrases = {script.id for script in dialogue_set.scripts if script.category == "paraphrase"}
    assert failed <= paraphrases, failed - paraphrases

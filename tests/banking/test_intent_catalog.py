"""The designers' intents file: the shipped one loads complete, and a file with a mistake is refused, named."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from banking.intent_catalog import MAX_EXAMPLE_CHARS, NOT_DESCRIBED, ContentError, IntentCatalog
from banking.intents import Intent

DESCRIBED = [intent for intent in Intent if intent not in NOT_DESCRIBED]


def complete_entries() -> list[dict[str, Any]]:
    """One valid entry per intent the understander names, each with its own two examples."""
    entries: list[dict[str, Any]] = []
    for intent in DESCRIBED:
        entry: dict[str, Any] = {
            "name": intent.value,
            "auth": "none",
            "says": f"Handles {intent.value}.",
            "examples": [f"first way to say {intent.value}", f"second way to say {intent.value}"],
        }
        if intent in (Intent.YES, Intent.NO):
            entry["expect"] = "yes_no"
        entries.append(entry)
    return entries


def entry_for(entries: list[dict[str, Any]], intent: Intent) -> dict[str, Any]:
    return next(entry for entry in entries if entry["name"] == intent.value)


def write(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    path = tmp_path / "intents.yaml"
    path.write_text(yaml.safe_dump({"intents": entries}, sort_keys=False), encoding="utf-8")
    return path


# -- the shipped file --


def test_the_shipped_catalog_describes_every_intent_except_digits_date_and_knowledge() -> None:
    catalog = IntentCatalog.load()
    assert set(catalog.by_intent) == set(Intent) - {Intent.DIGITS, Intent.DATE, Intent.KNOWLEDGE}
    assert len(catalog.descriptions) == len(catalog.by_intent)
    for description in catalog.descriptions:
        assert description.examples, description.intent
        assert description.says, description.intent


def test_the_shipped_yes_and_no_examples_count_only_after_a_yes_no_question() -> None:
    catalog = IntentCatalog.load()
    assert catalog.by_intent[Intent.YES].expect == "yes_no"
    assert catalog.by_intent[Intent.NO].expect == "yes_no"


def test_the_shipped_banking_services_need_a_verified_caller() -> None:
    catalog = IntentCatalog.load()
    for intent in (Intent.BALANCE, Intent.TRANSACTIONS, Intent.LOCK_CARD, Intent.LOST_STOLEN):
        assert catalog.by_intent[intent].auth == "verified", intent


# -- files written here --


def test_a_complete_hand_written_catalog_loads_with_whitespace_normalised(tmp_path: Path) -> None:
    entries = complete_entries()
    entry_for(entries, Intent.BALANCE)["examples"] = ["  what's   my\n balance ", "how much do I have"]
    catalog = IntentCatalog.load(write(tmp_path, entries))
    assert catalog.by_intent[Intent.BALANCE].examples == ("what's my balance", "how much do I have")
    assert catalog.by_intent[Intent.AGENT].expect == "any"
    assert catalog.by_intent[Intent.YES].expect == "yes_no"


def test_an_unknown_intent_name_is_refused_naming_it(tmp_path: Path) -> None:
    entries = complete_entries()
    entries.append({"name": "mortgage_rates", "auth": "none", "says": "Rates.", "examples": ["what are your rates"]})
    with pytest.raises(ContentError, match="unknown intent 'mortgage_rates'"):
        IntentCatalog.load(write(tmp_path, entries))


@pytest.mark.parametrize("intent", sorted(NOT_DESCRIBED))
def test_an_intent_read_by_rules_or_the_knowledge_base_is_refused(tmp_path: Path, intent: Intent) -> None:
    entries = complete_entries()
    entries.append({"name": intent.value, "auth": "none", "says": "No.", "examples": ["something else entirely"]})
    with pytest.raises(ContentError, match=f"{intent.value} is read by rules or the knowledge base"):
        IntentCatalog.load(write(tmp_path, entries))


@pytest.mark.parametrize("repeated", ["where is my card", "Where is  my CARD"], ids=["same", "case-and-spacing"])
def test_an_example_under_two_intents_is_refused(tmp_path: Path, repeated: str) -> None:
    entries = complete_entries()
    entry_for(entries, Intent.CARD_DELIVERY)["examples"].append("where is my card")
    entry_for(entries, Intent.LOST_STOLEN)["examples"].append(repeated)
    with pytest.raises(ContentError, match=r"intent lost_stolen: example .* is also under card_delivery"):
        IntentCatalog.load(write(tmp_path, entries))


def test_missing_intents_are_refused_and_listed(tmp_path: Path) -> None:
    entries = [entry for entry in complete_entries() if entry["name"] not in ("balance", "repeat")]
    with pytest.raises(ContentError, match="intents without examples: balance, repeat"):
        IntentCatalog.load(write(tmp_path, entries))


def test_an_intent_described_twice_is_refused(tmp_path: Path) -> None:
    entries = complete_entries()
    entries.append({**entry_for(entries, Intent.GOODBYE), "examples": ["see you later then"]})
    with pytest.raises(ContentError, match="described twice"):
        IntentCatalog.load(write(tmp_path, entries))


@pytest.mark.parametrize("auth", ["verfied", "otp", "Verified", ""])
def test_an_auth_value_other_than_none_or_verified_is_refused(tmp_path: Path, auth: str) -> None:
    entries = complete_entries()
    entry_for(entries, Intent.BALANCE)["auth"] = auth
    with pytest.raises(ContentError, match=r"intent balance: ('auth' must be a non-empty text|auth must be one of)"):
        IntentCatalog.load(write(tmp_path, entries))


def test_an_expect_other_than_any_or_yes_no_is_refused(tmp_path: Path) -> None:
    entries = complete_entries()
    entry_for(entries, Intent.YES)["expect"] = "digits"
    with pytest.raises(ContentError, match="intent yes: expect must be"):
        IntentCatalog.load(write(tmp_path, entries))


def test_an_example_over_300_characters_is_refused_and_one_of_300_is_accepted(tmp_path: Path) -> None:
    assert MAX_EXAMPLE_CHARS == 300
    entries = complete_entries()
    entry_for(entries, Intent.SMALL_TALK)["examples"].append("a" * 300)
    assert len(IntentCatalog.load(write(tmp_path, entries)).by_intent[Intent.SMALL_TALK].examples) == 3

    entry_for(entries, Intent.SMALL_TALK)["examples"].append("b" * 301)
    with pytest.raises(ContentError, match="intent small_talk: 'examples' has a text over 300 characters"):
        IntentCatalog.load(write(tmp_path, entries))


@pytest.mark.parametrize("examples", [[], "just one string", ["fine", ""], ["fine", 3]], ids=repr)
def test_examples_must_be_a_non_empty_list_of_texts(tmp_path: Path, examples: object) -> None:
    entries = complete_entries()
    entry_for(entries, Intent.REPEAT)["examples"] = examples
    with pytest.raises(ContentError, match="intent repeat: 'examples' must be a non-empty list of texts"):
        IntentCatalog.load(write(tmp_path, entries))


@pytest.mark.parametrize("text", ["", "intents: [unclosed", "just text", "intents: {balance: 1}"])
def test_a_file_without_an_intents_list_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "intents.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ContentError, match=re.escape(str(path))):
        IntentCatalog.load(path)


def test_a_missing_file_is_a_content_error(tmp_path: Path) -> None:
    with pytest.raises(ContentError, match=r"absent\.yaml"):
        IntentCatalog.load(tmp_path / "absent.yaml")

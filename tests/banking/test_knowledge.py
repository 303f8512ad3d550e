"""The bank's approved answers: the shipped file loads fit for speech, and a file with a mistake is refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from banking.intent_catalog import ContentError
from banking.knowledge import MAX_ANSWER_CHARS, KnowledgeBase, KnowledgeEntry


def entry(entry_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": entry_id,
        "title": f"About {entry_id}",
        "questions": [f"tell me about {entry_id}", f"what is {entry_id}"],
        "answer": f"Here is what to know about {entry_id}.",
        **fields,
    }


def write(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    path = tmp_path / "knowledge.yaml"
    path.write_text(yaml.safe_dump({"entries": entries}, sort_keys=False), encoding="utf-8")
    return path


# -- the shipped file --


def test_the_shipped_knowledge_base_has_at_least_30_entries_with_unique_kebab_case_ids() -> None:
    knowledge = KnowledgeBase.load()
    ids = [item.id for item in knowledge.entries]
    assert len(ids) >= 30
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", entry_id) for entry_id in ids)


def test_no_shipped_answer_has_a_run_of_four_or_more_digits() -> None:
    for item in KnowledgeBase.load().entries:
        assert not re.search(r"\d{4,}", item.answer), item.id


def test_every_shipped_entry_has_a_title_questions_and_an_answer_short_enough_to_speak() -> None:
    for item in KnowledgeBase.load().entries:
        assert item.title and item.questions and item.answer, item.id
        assert len(item.answer) <= MAX_ANSWER_CHARS, item.id


# -- files written here --


def test_a_hand_written_file_loads_and_answer_finds_each_entry_by_id(tmp_path: Path) -> None:
    path = write(tmp_path, [entry("foreign-fee"), entry("lost-checkbook", offer_agent=True)])
    knowledge = KnowledgeBase.load(path)

    found = knowledge.answer("lost-checkbook")
    assert found == KnowledgeEntry(
        id="lost-checkbook",
        title="About lost-checkbook",
        questions=("tell me about lost-checkbook", "what is lost-checkbook"),
        answer="Here is what to know about lost-checkbook.",
        offer_agent=True,
    )
    fee = knowledge.answer("foreign-fee")
    assert fee is not None
    assert fee.offer_agent is False


def test_answer_for_an_unknown_id_is_none(tmp_path: Path) -> None:
    knowledge = KnowledgeBase.load(write(tmp_path, [entry("foreign-fee")]))
    assert knowledge.answer("mortgages") is None
    assert knowledge.answer("") is None


@pytest.mark.parametrize("entry_id", ["Foreign-Fee", "foreign_fee", "foreign fee", "-fee", "fee-", "fee--abroad"])
def test_an_id_that_is_not_kebab_case_is_refused(tmp_path: Path, entry_id: str) -> None:
    with pytest.raises(ContentError, match="must be kebab-case"):
        KnowledgeBase.load(write(tmp_path, [entry(entry_id)]))


@pytest.mark.parametrize("answer", ["Call us on 1234.", "Your code is 123456.", "Since 2024 we charge nothing."])
def test_an_answer_with_a_run_of_four_digits_is_refused(tmp_path: Path, answer: str) -> None:
    with pytest.raises(ContentError, match="entry foreign-fee: the answer has a run of four or more digits"):
        KnowledgeBase.load(write(tmp_path, [entry("foreign-fee", answer=answer)]))


def test_an_answer_with_three_digits_is_accepted(tmp_path: Path) -> None:
    knowledge = KnowledgeBase.load(write(tmp_path, [entry("atm-limit", answer="The limit is 500 dollars a day.")]))
    assert knowledge.answer("atm-limit") is not None


def test_an_answer_over_the_spoken_length_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ContentError, match=f"over {MAX_ANSWER_CHARS} characters"):
        KnowledgeBase.load(write(tmp_path, [entry("long", answer="word " * MAX_ANSWER_CHARS)]))


def test_an_id_used_twice_is_refused_naming_it(tmp_path: Path) -> None:
    entries = [entry("foreign-fee"), entry("mortgages"), entry("foreign-fee", title="Again")]
    with pytest.raises(ContentError, match="ids used twice: foreign-fee"):
        KnowledgeBase.load(write(tmp_path, entries))


@pytest.mark.parametrize("offer_agent", ["true", "no", 1, 0, None], ids=repr)
def test_offer_agent_that_is_not_a_boolean_is_refused(tmp_path: Path, offer_agent: object) -> None:
    with pytest.raises(ContentError, match="entry lost-checkbook: offer_agent must be true or false"):
        KnowledgeBase.load(write(tmp_path, [entry("lost-checkbook", offer_agent=offer_agent)]))


@pytest.mark.parametrize("missing", ["title", "questions", "answer"])
def test_an_entry_without_a_required_field_is_refused(tmp_path: Path, missing: str) -> None:
    item = entry("foreign-fee")
    del item[missing]
    with pytest.raises(ContentError, match=f"entry foreign-fee: '{missing}'"):
        KnowledgeBase.load(write(tmp_path, [item]))


@pytest.mark.parametrize("text", ["", "entries: []", "entries: {a: 1}", "- a list"])
def test_a_file_without_a_non_empty_entries_list_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "knowledge.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ContentError, match="expected a non-empty top-level 'entries' list"):
        KnowledgeBase.load(path)

"""Tests for banking.numbers: digit strings as callers say them and recognisers write them."""

from __future__ import annotations

import pytest

from banking.numbers import TokenKind, digit_runs, parse_digit_string, tokenize


@pytest.mark.parametrize(
    ("utterance", "digits"),
    [
        ("four two one one", "4211"),
        ("Four, two, one, one.", "4211"),
        ("4211", "4211"),
        ("42 11", "4211"),
        ("forty two eleven", "4211"),
        ("forty-two eleven", "4211"),
        ("double four one one", "4411"),
        ("triple seven one", "7771"),
        ("oh one two three", "0123"),
        ("zero zero seven", "007"),
        ("the last four are four two one one", "4211"),
        ("um, it's 1 8 8 1", "1881"),
        ("twenty", "20"),
        ("one", "1"),
    ],
)
def test_parse_digit_string_reads_spoken_and_written_digits(utterance: str, digits: str) -> None:
    assert parse_digit_string(utterance) == digits


@pytest.mark.parametrize(
    "utterance",
    [
        "forty two dollars",
        "where is my card",
        "my pin is 1234",
        "four hundred",
        "",
        "5th",
        "03/05/1980",
        "one-time code",
    ],
)
def test_parse_digit_string_refuses_utterances_that_say_more_than_digits(utterance: str) -> None:
    assert parse_digit_string(utterance) is None


def test_token_offsets_point_into_the_original_text() -> None:
    text = "My card ends in Four-Two 1 1!"
    for token in tokenize(text):
        assert text[token.start : token.end].lower() == token.text.lower()


def test_ordinal_numbers_are_marked_and_are_not_digit_strings() -> None:
    tokens = tokenize("the 5th of March")
    fifth = next(token for token in tokens if token.kind is TokenKind.NUMBER)
    assert fifth.text == "5" and fifth.ordinal
    assert digit_runs(tokens) == []


def test_digit_runs_find_each_run_with_its_character_span() -> None:
    text = "card 4111 1111 1111 1111 and pin four five"
    runs = digit_runs(tokenize(text))
    assert [run.digits for run in runs] == ["4111111111111111", "45"]
    assert [text[run.start : run.end] for run in runs] == ["4111 1111 1111 1111", "four five"]


def test_hyphenated_number_adjectives_are_not_digits() -> None:
    assert digit_runs(tokenize("a one-time code, six-digit, two-step")) == []
    assert [run.digits for run in digit_runs(tokenize("twenty-one"))] == ["21"]

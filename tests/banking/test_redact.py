"""Tests for banking.redact, with property-style checks over seeded random card numbers and phrasings.

The random cases are generated from fixed seeds, so a failure always reproduces (no extra dependency).
"""

from __future__ import annotations

import random
import re

import pytest

from banking.numbers import UNITS
from banking.redact import (
    DATE_MASK,
    DIGITS_MASK,
    PAN_MASK,
    SECRET_MASK,
    contains_pan,
    luhn_valid,
    redact,
    redact_for_prompt,
)

_DIGIT_WORDS = {value: word for word, value in UNITS.items() if word not in ("oh", "o")}
_FILLER = ["my", "card", "is", "please", "the", "number", "thanks", "so", "uh", "it's", "and", "then"]


def luhn_complete(body: str) -> str:
    """`body` plus the check digit that makes it Luhn-valid."""
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")


def random_pan(rng: random.Random) -> str:
    length = rng.randint(13, 19)
    prefix = rng.choice(["4", "51", "37", "6011", "35"])
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - 1 - len(prefix)))
    return luhn_complete(body)


def spoken_form(pan: str, rng: random.Random) -> str:
    """The PAN as a caller or a recogniser might put it: grouped, hyphenated, spelled out, "double"."""
    style = rng.choice(["plain", "groups", "hyphens", "words", "words_double", "mixed"])
    if style == "plain":
        return pan
    if style == "groups":
        return " ".join(pan[i : i + 4] for i in range(0, len(pan), 4))
    if style == "hyphens":
        return "-".join(pan[i : i + 4] for i in range(0, len(pan), 4))
    if style == "words":
        return " ".join(_DIGIT_WORDS[int(d)] for d in pan)
    if style == "words_double":
        words: list[str] = []
        i = 0
        while i < len(pan):
            if i + 1 < len(pan) and pan[i] == pan[i + 1]:
                words += ["double", _DIGIT_WORDS[int(pan[i])]]
                i += 2
            else:
                words.append(_DIGIT_WORDS[int(pan[i])])
                i += 1
        return " ".join(words)
    return " ".join(_DIGIT_WORDS[int(d)] if rng.random() < 0.5 else d for d in pan)


def sentence_around(core: str, rng: random.Random) -> tuple[str, str, str]:
    before = " ".join(rng.choice(_FILLER) for _ in range(rng.randint(0, 4)))
    after = " ".join(rng.choice(_FILLER) for _ in range(rng.randint(0, 4)))
    return before, core, after


def test_luhn_accepts_real_test_card_numbers_and_rejects_a_changed_digit() -> None:
    for pan in ("4111111111111111", "5500005555555559", "378282246310005", "6011111111111117"):
        assert luhn_valid(pan)
        assert not luhn_valid(pan[:-1] + str((int(pan[-1]) + 1) % 10))
    assert not luhn_valid("")
    assert not luhn_valid("4111-1111")


@pytest.mark.parametrize("seed", range(8))
def test_property_every_card_number_in_any_spoken_form_is_masked(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        pan = random_pan(rng)
        before, core, after = sentence_around(spoken_form(pan, rng), rng)
        redacted = redact(f"{before} {core} {after}")
        assert PAN_MASK in redacted
        assert not contains_pan(re.sub(r"\D", "", redacted)), redacted
        assert redacted.startswith(f"{before} ") and redacted.endswith(f" {after}")  # context kept


@pytest.mark.parametrize("seed", range(4))
def test_property_redaction_is_idempotent_and_masks_hold_no_digits(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for _ in range(50):
        pan = random_pan(rng)
        parts = [spoken_form(pan, rng), "my pin is 4321", "born March 5th, 1980", rng.choice(_FILLER)]
        rng.shuffle(parts)
        once = redact(" and ".join(parts))
        assert redact(once) == once
        assert not re.search(r"\d", once), once


@pytest.mark.parametrize("seed", range(4))
def test_property_text_without_numbers_is_left_unchanged(seed: int) -> None:
    rng = random.Random(2000 + seed)
    vocabulary = [*_FILLER, "where", "arrived", "lost", "balance", "agent", "March", "hello", "card", "pin", "code"]
    for _ in range(100):
        text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 12)))
        assert redact(text) == text


def test_digit_strings_with_no_luhn_valid_run_are_not_card_numbers() -> None:
    assert not contains_pan("1234567812345678")
    assert redact("reference 1234 5678 1234 5678") == "reference 1234 5678 1234 5678"
    assert redact("call me on 202 555 0101") == "call me on 202 555 0101"


def test_card_number_run_together_with_its_expiry_is_masked_whole() -> None:
    assert redact("4111 1111 1111 1111 1226 thanks") == f"{PAN_MASK} thanks"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my pin is 1234", f"my pin is {SECRET_MASK}"),
        ("the code is four five six seven eight nine", f"the code is {SECRET_MASK}"),
        ("CVV 123", f"CVV {SECRET_MASK}"),
        ("1234 is my pin", f"{SECRET_MASK} is my pin"),
        ("my password is, um, 9 9 1 2", f"my password is, um, {SECRET_MASK}"),
        ("the OTP: 482913", f"the OTP: {SECRET_MASK}"),
    ],
)
def test_digits_near_a_secret_word_are_masked_whatever_their_length(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    ["march fifth nineteen eighty", "5th of March 1980", "03/05/1980", "1980-03-05", "the 5th of march, 1980"],
)
def test_full_dates_are_masked_in_caller_text(text: str) -> None:
    assert redact(f"born {text} ok") == f"born {DATE_MASK} ok"


def test_dates_can_be_kept_for_bot_text_while_card_numbers_are_still_masked() -> None:
    text = "expected by November 24, 2026; card 4111111111111111"
    assert redact(text, mask_dates=False) == f"expected by November 24, 2026; card {PAN_MASK}"


def test_partial_dates_and_card_endings_are_not_masked() -> None:
    assert redact("my card ending 4211 since March 1980") == "my card ending 4211 since March 1980"


def test_mask_all_digits_masks_every_digit_string_for_secret_answers() -> None:
    assert redact("it's four two one one", mask_all_digits=True) == f"it's {DIGITS_MASK}"
    assert redact("1 8 8 1", mask_all_digits=True) == DIGITS_MASK


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("it's 1881", f"it's {DIGITS_MASK}"),  # a card ending said out of turn
        ("four one nine", DIGITS_MASK),  # a CVV with no word to announce it
        ("the 2nd card, I have 2 cards", "the 2nd card, I have 2 cards"),
        ("card number two", "card number two"),
        ("card 4111 1111 1111 1111", f"card {PAN_MASK}"),
        ("born March 5th, 1980", f"born {DATE_MASK}"),
        ("pin is 12", f"pin is {SECRET_MASK}"),
    ],
)
def test_text_for_a_prompt_keeps_no_digit_string_longer_than_two(text: str, expected: str) -> None:
    assert redact_for_prompt(text) == expected
    assert redact_for_prompt(expected) == expected  # idempotent


def test_text_for_a_prompt_loses_every_digit_when_a_secret_was_asked() -> None:
    assert redact_for_prompt("the second, number 2", mask_all_digits=True) == f"the second, number {DIGITS_MASK}"

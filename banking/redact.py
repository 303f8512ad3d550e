"""Redaction of card numbers, secrets and dates of birth in text bound for logs, transcripts and prompts.

What is masked, and why:
- card numbers (PAN): every digit string of 13 or more digits, written ("4111 1111 1111 1111",
  "4111-1111-...") or spoken ("four one one one ..."), that holds a Luhn-valid run of 13 to 19 digits.
  A longer string is masked whole: a caller reading a card number and its expiry runs them together.
- secrets: any digit string near a word that announces a PIN, one-time code, password or CVV
  ("my pin is 1234", "the code is four five six"), whatever its length.
- full dates (day, month and year) in the caller's words: a date of birth is an authentication
  factor, and in a transcript there is no telling a date of birth from another date.
- with `mask_all_digits`, every digit string: for answers given while a secret was asked for.

`redact_for_prompt` is stricter still, for text that goes into a model prompt.

Masks are bracketed words with no digits, so redacting twice changes nothing.
"""

from __future__ import annotations

from typing import Final

from banking.dates import find_dates
from banking.numbers import Token, TokenKind, digit_runs, tokenize

PAN_MASK: Final = "[card number]"
SECRET_MASK: Final = "[secret]"
DATE_MASK: Final = "[date]"
DIGITS_MASK: Final = "[digits]"
ANSWER_MASK: Final = "[answer to a security question]"  # a whole utterance said where a date of birth was asked
PROMPT_MAX_DIGITS: Final = 2  # the longest digit string a model prompt may hold
PAN_MIN_DIGITS: Final = 13
PAN_MAX_DIGITS: Final = 19
SECRET_WORDS: Final = frozenset(
    {
        "pin",
        "pins",
        "passcode",
        "password",
        "otp",
        "code",
        "codes",
        "cvv",
        "cvv2",
        "cvc",
        "cvc2",
        "cv2",
        "ssn",
        "security",
    }
)
# How many tokens may separate a secret word from its digits: "my pin number is, um, 1234", "1234 is my pin".
_WORD_BEFORE_DIGITS: Final = 6
_WORD_AFTER_DIGITS: Final = 4


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number passes."""
    if not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def contains_pan(digits: str) -> bool:
    """Whether a digit string holds a Luhn-valid run of 13 to 19 digits anywhere in it."""
    for length in range(PAN_MIN_DIGITS, min(PAN_MAX_DIGITS, len(digits)) + 1):
        for start in range(len(digits) - length + 1):
            if luhn_valid(digits[start : start + length]):
                return True
    return False


def _near_secret_word(tokens: list[Token], first: int, stop: int) -> bool:
    before = tokens[max(0, first - _WORD_BEFORE_DIGITS) : first]
    after = tokens[stop : stop + _WORD_AFTER_DIGITS]
    return any(token.kind is TokenKind.WORD and token.text in SECRET_WORDS for token in (*before, *after))


def redact(text: str, *, mask_dates: bool = True, mask_all_digits: bool = False) -> str:
    """`text` with card numbers, secrets and (unless `mask_dates` is False) full dates masked."""
    spans: list[tuple[int, int, str]] = []
    if mask_dates:
        spans.extend((span.start, span.end, DATE_MASK) for span in find_dates(text))
    tokens = tokenize(text)
    for run in digit_runs(tokens):
        if any(start < run.end and run.start < end for start, end, _ in spans):
            continue  # already inside a masked date
        if len(run.digits) >= PAN_MIN_DIGITS and contains_pan(run.digits):
            spans.append((run.start, run.end, PAN_MASK))
        elif _near_secret_word(tokens, run.first, run.stop):
            spans.append((run.start, run.end, SECRET_MASK))
        elif mask_all_digits:
            spans.append((run.start, run.end, DIGITS_MASK))
    for start, end, mask in sorted(spans, reverse=True):
        text = text[:start] + mask + text[end:]
    return text


def redact_for_prompt(text: str, *, mask_all_digits: bool = False) -> str:
    """`redact`, made stricter for text bound for a model prompt: every digit string of three or more digits goes.

    A model needs no number to tell what a caller wants, while a short digit string said out of turn
    ("it's 1881", "419") may be a card's ending or a CVV with no word to announce it. One or two digits
    stay: "the 2nd card", "I have 2 cards".
    """
    text = redact(text, mask_all_digits=mask_all_digits)
    runs = [run for run in digit_runs(tokenize(text)) if len(run.digits) > PROMPT_MAX_DIGITS]
    for run in reversed(runs):
        text = text[: run.start] + DIGITS_MASK + text[run.end :]
    return text

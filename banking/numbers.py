"""Digit strings as callers say them and speech recognisers write them.

"four two one one", "forty two eleven", "double four one one", "4211" and "4111-1111" are all digit
strings. The fast path (reading card endings and codes) and the redactor (finding card numbers and
PINs in transcripts) must agree on what a digit string is, so both use this one tokenizer and grammar.
Token offsets point into the original text, so a redactor can replace exactly the characters spoken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

UNITS: Final = {
    "zero": 0,
    "oh": 0,
    "o": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
TEENS: Final = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
TENS: Final = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
REPEATERS: Final = {"double": 2, "triple": 3}
# "oh" and "o" mean zero only inside a digit string; "forty oh" is not 40, so tens take only true units.
_TRUE_UNITS: Final = {word: value for word, value in UNITS.items() if word not in ("oh", "o")}
# Separators a recogniser writes between groups of one spoken number: "4111-1111", "four two, one one".
_JOINERS: Final = frozenset({"-", ",", "."})

_TOKEN_RE: Final = re.compile(
    r"(?P<num>\d+(?:[/.\-]\d+)*)(?P<suffix>st|nd|rd|th)?"
    r"|(?P<word>[^\W\d_]+(?:'[^\W\d_]+)?)"
    r"|(?P<punct>[^\s\w])",
    re.IGNORECASE,
)


class TokenKind(StrEnum):
    NUMBER = "number"
    WORD = "word"
    PUNCT = "punct"


@dataclass(frozen=True, slots=True)
class Token:
    """One token of an utterance; `text` is lower-cased, `start`/`end` index the original string."""

    text: str
    start: int
    end: int
    kind: TokenKind
    ordinal: bool = False  # a number written with st/nd/rd/th: "5th"


@dataclass(frozen=True, slots=True)
class DigitRun:
    """A maximal digit string found in a token list: tokens [first, stop) spell `digits`."""

    digits: str
    first: int
    stop: int
    start: int  # character offsets into the original text
    end: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    for match in _TOKEN_RE.finditer(text):
        if match.group("num") is not None:
            ordinal = match.group("suffix") is not None
            tokens.append(Token(match.group("num"), match.start(), match.end(), TokenKind.NUMBER, ordinal))
        elif match.group("word") is not None:
            tokens.append(Token(match.group().lower(), match.start(), match.end(), TokenKind.WORD))
        else:
            tokens.append(Token(match.group(), match.start(), match.end(), TokenKind.PUNCT))
    return tokens


def _is_word(tokens: list[Token], index: int, table: dict[str, int]) -> bool:
    return index < len(tokens) and tokens[index].kind is TokenKind.WORD and tokens[index].text in table


def _skip_hyphen(tokens: list[Token], index: int) -> int:
    """Index past a hyphen that joins two number words ("twenty-one")."""
    if index < len(tokens) and tokens[index].text == "-" and tokens[index].kind is TokenKind.PUNCT:
        return index + 1
    return index


def read_under_100(tokens: list[Token], index: int) -> tuple[int, int] | None:
    """A spoken number 0..99 ("seven", "twelve", "forty", "forty-two") at `index`: (value, next index)."""
    if _is_word(tokens, index, _TRUE_UNITS):
        return _TRUE_UNITS[tokens[index].text], index + 1
    if _is_word(tokens, index, TEENS):
        return TEENS[tokens[index].text], index + 1
    if _is_word(tokens, index, TENS):
        tens = TENS[tokens[index].text]
        after = _skip_hyphen(tokens, index + 1)
        if _is_word(tokens, after, _TRUE_UNITS) and _TRUE_UNITS[tokens[after].text] > 0:
            return tens + _TRUE_UNITS[tokens[after].text], after + 1
        return tens, index + 1
    return None


def _is_compound_word(tokens: list[Token], index: int) -> bool:
    """A number word hyphenated to a non-number word is an adjective, not a digit: "one-time", "six-digit"."""
    after = index + 2
    return (
        after < len(tokens)
        and tokens[index + 1].text == "-"
        and tokens[after].kind is TokenKind.WORD
        and not any(tokens[after].text in table for table in (UNITS, TEENS, TENS))
    )


def _read_group(tokens: list[Token], index: int) -> tuple[str, int] | None:
    """One group of a digit string at `index`: its digits and the index after it."""
    token = tokens[index]
    if token.kind is TokenKind.NUMBER:
        if token.ordinal or "/" in token.text:  # "5th" is a day, "03/05/1980" a date: neither is a digit string
            return None
        return re.sub(r"\D", "", token.text), index + 1
    if token.kind is not TokenKind.WORD or _is_compound_word(tokens, index):
        return None
    if token.text in REPEATERS and _is_word(tokens, index + 1, UNITS):
        return str(UNITS[tokens[index + 1].text]) * REPEATERS[token.text], index + 2
    if token.text in UNITS:
        return str(UNITS[token.text]), index + 1
    spoken = read_under_100(tokens, index)
    if spoken is None:
        return None
    value, after = spoken
    return f"{value:02d}", after


def digit_runs(tokens: list[Token]) -> list[DigitRun]:
    """Every maximal digit string in `tokens`, groups joined by spaces, hyphens, commas or dots."""
    runs: list[DigitRun] = []
    index = 0
    while index < len(tokens):
        group = _read_group(tokens, index)
        if group is None:
            index += 1
            continue
        first, (digits, index) = index, group
        while index < len(tokens):
            after_joiner = index + 1 if tokens[index].text in _JOINERS else index
            nxt = _read_group(tokens, after_joiner) if after_joiner < len(tokens) else None
            if nxt is None:
                break
            digits += nxt[0]
            index = nxt[1]
        runs.append(DigitRun(digits, first, index, tokens[first].start, tokens[index - 1].end))
    return runs


def has_digits(text: str) -> bool:
    """Whether `text` holds any digit string, written or spoken."""
    return bool(digit_runs(tokenize(text)))


_LEAD_IN_RE: Final = re.compile(r"\b(?:the\s+)?last\s+(?:four|4)(?:\s+(?:digits|numbers))?\b", re.IGNORECASE)
_FILLER_RE: Final = re.compile(
    r"it'?s|it|is|are|was|my|the|um+|uh+|er+m?|hmm+|okay|ok|so|that'?s|numbers?|digits|code|they'?re"
)


def parse_digit_string(text: str) -> str | None:
    """The digits of an utterance that is nothing but a digit string (plus filler words), else None.

    "the last four are four two one one" -> "4211". An utterance with other content ("forty two
    dollars") is not a digit string: it may mean something else, so it is left to other rules.
    """
    tokens = [
        token
        for token in tokenize(_LEAD_IN_RE.sub(" ", text))
        if not (token.kind is TokenKind.WORD and _FILLER_RE.fullmatch(token.text))
    ]
    while tokens and tokens[-1].kind is TokenKind.PUNCT:  # the recogniser's final full stop
        tokens.pop()
    while tokens and tokens[0].kind is TokenKind.PUNCT:  # what was left of "um, ..."
        tokens.pop(0)
    runs = digit_runs(tokens)
    if len(runs) != 1 or runs[0].first != 0 or runs[0].stop != len(tokens):
        return None
    return runs[0].digits

"""Full calendar dates as callers say them: "march fifth nineteen eighty", "5th of March 1980", "03/05/1980".

Used to read a date of birth (fast path) and to find dates of birth in transcripts (redaction), so
both agree on what a date is. Only full dates (day, month and year) count: "March 1980" is not one.

Numeric dates are ambiguous: 03/05/1980 is March 5th in the US and May 3rd in Europe. The order is a
parameter (`DateOrder`), MDY by default because this line serves a US bank (US numbers, dollars).
When the configured order gives no valid date but the other one does (25/03/1980 under MDY), the
caller can only have meant the other one, so it is accepted. ISO dates (1980-03-05) are always YMD.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from banking.numbers import TENS, UNITS, Token, TokenKind, read_under_100, tokenize


class DateOrder(StrEnum):
    MDY = "mdy"
    DMY = "dmy"


@dataclass(frozen=True, slots=True)
class DateSpan:
    """A date found in a text; `start`/`end` are character offsets of its words."""

    value: dt.date
    start: int
    end: int


MONTHS: Final = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
ORDINAL_UNITS: Final = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
}
ORDINALS: Final = {
    **ORDINAL_UNITS,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "thirteenth": 13,
    "fourteenth": 14,
    "fifteenth": 15,
    "sixteenth": 16,
    "seventeenth": 17,
    "eighteenth": 18,
    "nineteenth": 19,
    "twentieth": 20,
    "thirtieth": 30,
}
# Years are read in 1900..2099: a date of birth or a delivery date, never a historical date.
MIN_YEAR: Final = 1900
MAX_YEAR: Final = 2099
_CENTURIES: Final = {"nineteen": 19, "twenty": 20}
_ISO_RE: Final = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_NUMERIC_RE: Final = re.compile(r"(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4})")
_SKIPPABLE: Final = frozenset({",", "."})


def _make_date(year: int, month: int, day: int) -> dt.date | None:
    if not MIN_YEAR <= year <= MAX_YEAR:
        return None
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _numeric_date(text: str, order: DateOrder) -> dt.date | None:
    if (iso := _ISO_RE.fullmatch(text)) is not None:
        return _make_date(int(iso[1]), int(iso[2]), int(iso[3]))
    if (numeric := _NUMERIC_RE.fullmatch(text)) is None:
        return None
    first, second, year = int(numeric[1]), int(numeric[2]), int(numeric[3])
    month, day = (first, second) if order is DateOrder.MDY else (second, first)
    return _make_date(year, month, day) or _make_date(year, day, month)


class _Reader:
    """Reads one date's parts from a token list; every method returns (value, next index) or None."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens

    def word(self, index: int) -> str | None:
        if index < len(self.tokens) and self.tokens[index].kind is TokenKind.WORD:
            return self.tokens[index].text
        return None

    def skip(self, index: int, *words: str) -> int:
        """Index past optional filler words and commas/full stops."""
        while index < len(self.tokens) and (
            self.tokens[index].text in words
            or (self.tokens[index].kind is TokenKind.PUNCT and self.tokens[index].text in _SKIPPABLE)
        ):
            index += 1
        return index

    def month(self, index: int) -> tuple[int, int] | None:
        word = self.word(index)
        return (MONTHS[word], index + 1) if word in MONTHS else None

    def day(self, index: int) -> tuple[int, int] | None:
        if index >= len(self.tokens):
            return None
        token = self.tokens[index]
        if token.kind is TokenKind.NUMBER:
            if token.text.isdigit() and len(token.text) <= 2 and 1 <= int(token.text) <= 31:
                return int(token.text), index + 1
            return None
        word = self.word(index)
        if word in TENS:  # "twenty first", "twenty-first", "thirty one"
            after = index + 1
            if after < len(self.tokens) and self.tokens[after].text == "-":
                after += 1
            unit = self.word(after)
            if unit in ORDINAL_UNITS:
                return TENS[word] + ORDINAL_UNITS[unit], after + 1
        if word in ORDINALS:
            return ORDINALS[word], index + 1
        spoken = read_under_100(self.tokens, index)
        if spoken is not None and 1 <= spoken[0] <= 31:
            return spoken
        return None

    def year(self, index: int) -> tuple[int, int] | None:
        if index >= len(self.tokens):
            return None
        token = self.tokens[index]
        if token.kind is TokenKind.NUMBER:
            if token.text.isdigit() and len(token.text) == 4 and not token.ordinal:
                return int(token.text), index + 1
            return None
        word = self.word(index)
        if word == "two" and self.word(index + 1) == "thousand":  # "two thousand (and) three"
            after = self.skip(index + 2, "and")
            tail = read_under_100(self.tokens, after)
            return (2000 + tail[0], tail[1]) if tail is not None else (2000, index + 2)
        if word in _CENTURIES:  # "nineteen eighty five", "nineteen oh five", "twenty twenty"
            century = _CENTURIES[word] * 100
            index += 1
            if index < len(self.tokens) and self.tokens[index].text == "-":
                index += 1  # a recogniser may join a spoken year's halves: "nineteen-eighty", "nineteen-oh-five"
            if self.word(index) == "hundred":
                return century, index + 1
            if self.word(index) in ("oh", "o", "zero"):
                after = index + 2 if index + 1 < len(self.tokens) and self.tokens[index + 1].text == "-" else index + 1
                if (unit := self.word(after)) in UNITS:
                    return century + UNITS[unit], after + 1
            tail = read_under_100(self.tokens, index)
            if tail is not None and tail[0] >= 10:
                return century + tail[0], tail[1]
        return None

    def date_at(self, index: int, order: DateOrder) -> tuple[dt.date, int] | None:
        """The longest date starting at token `index`, with the index after it."""
        token = self.tokens[index]
        if token.kind is TokenKind.NUMBER and not token.ordinal and (value := _numeric_date(token.text, order)):
            return value, index + 1
        if (month := self.month(index)) is not None:  # March (the) fifth(,) 1980
            day = self.day(self.skip(month[1], "the"))
            year = self.year(self.skip(day[1], "of")) if day is not None else None
            if day is not None and year is not None and (value := _make_date(year[0], month[0], day[0])):
                return value, year[1]
            return None
        day = self.day(self.skip(index, "the"))  # (the) fifth (of) March(,) 1980
        if day is None:
            return None
        month = self.month(self.skip(day[1], "of"))
        year = self.year(self.skip(month[1])) if month is not None else None
        if month is not None and year is not None and (value := _make_date(year[0], month[0], day[0])):
            return value, year[1]
        return None


def find_dates(text: str, order: DateOrder = DateOrder.MDY) -> list[DateSpan]:
    """Every full date in `text`, left to right, with the characters it occupies."""
    tokens = tokenize(text)
    reader = _Reader(tokens)
    found: list[DateSpan] = []
    index = 0
    while index < len(tokens):
        match = reader.date_at(index, order)
        if match is None:
            index += 1
            continue
        value, stop = match
        found.append(DateSpan(value, tokens[index].start, tokens[stop - 1].end))
        index = stop
    return found


def parse_date(text: str, order: DateOrder = DateOrder.MDY) -> dt.date | None:
    """The one date an utterance states ("I was born on March 5th, 1980"), or None.

    Two different dates in one answer ("March 5th 1980 or May 3rd 1980") are not guessed between.
    """
    values = {span.value for span in find_dates(text, order)}
    return values.pop() if len(values) == 1 else None


def states_whole_date(text: str, order: DateOrder = DateOrder.MDY) -> bool:
    """Whether a transcript so far already holds a whole date that more words would not change.

    Turn-taking asks it of the words heard at a pause, to end a date-of-birth answer without waiting for more.
    A year ending in a zero may still go on ("nineteen eighty ... five", "two thousand ... and five", "1900 ... and
    twelve"), so it does not count: cutting the turn there would verify a caller born in 1985 as born in 1980.
    """
    value = parse_date(text, order)
    return value is not None and value.year % 10 != 0

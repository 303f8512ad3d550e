"""Tests for banking.dates: full dates as callers say them, and the US/EU order of numeric dates."""

from __future__ import annotations

import datetime as dt

import pytest

from banking.dates import DateOrder, find_dates, parse_date, states_whole_date

MARCH_5_1980 = dt.date(1980, 3, 5)


@pytest.mark.parametrize(
    "utterance",
    [
        "march fifth nineteen eighty",
        "March 5th, 1980.",
        "march five nineteen eighty",
        "5th of March 1980",
        "the fifth of march, nineteen eighty",
        "March 5th, nineteen-eighty.",  # a recogniser joining the year's halves
        "5 March 1980",
        "Mar. 5 1980",
        "03/05/1980",
        "3-5-1980",
        "1980-03-05",
        "I was born on March the 5th, 1980",
    ],
)
def test_parse_date_reads_the_usual_ways_of_saying_a_date(utterance: str) -> None:
    assert parse_date(utterance) == MARCH_5_1980


@pytest.mark.parametrize(
    ("utterance", "expected"),
    [
        ("june twenty first twenty twenty", dt.date(2020, 6, 21)),
        ("the twenty-first of june two thousand and three", dt.date(2003, 6, 21)),
        ("january thirty first two thousand", dt.date(2000, 1, 31)),
        ("third of may nineteen oh five", dt.date(1905, 5, 3)),
        ("march twenty nineteen eighty five", dt.date(1985, 3, 20)),
        ("december 31st 1999", dt.date(1999, 12, 31)),
    ],
)
def test_parse_date_reads_spoken_years_and_compound_days(utterance: str, expected: dt.date) -> None:
    assert parse_date(utterance) == expected


def test_numeric_dates_follow_the_configured_order() -> None:
    assert parse_date("03/05/1980", DateOrder.MDY) == dt.date(1980, 3, 5)
    assert parse_date("03/05/1980", DateOrder.DMY) == dt.date(1980, 5, 3)


def test_numeric_date_valid_only_in_the_other_order_is_read_that_way() -> None:
    assert parse_date("25/03/1980", DateOrder.MDY) == dt.date(1980, 3, 25)
    assert parse_date("03/25/1980", DateOrder.DMY) == dt.date(1980, 3, 25)


def test_iso_dates_are_always_year_month_day() -> None:
    assert parse_date("1980-03-05", DateOrder.DMY) == MARCH_5_1980


@pytest.mark.parametrize(
    "utterance",
    [
        "march 1980",
        "march fifth",
        "february thirtieth nineteen eighty",
        "13/13/1980",
        "may I ask something",
        "march fifth eighteen fifty",
        "",
        "03/05/1980 or 04/05/1980",
    ],
)
def test_parse_date_returns_none_without_exactly_one_full_valid_date(utterance: str) -> None:
    assert parse_date(utterance) is None


def test_find_dates_returns_character_spans_of_each_date() -> None:
    text = "born March 5th, 1980, card sent 2026-11-18"
    spans = find_dates(text)
    assert [span.value for span in spans] == [MARCH_5_1980, dt.date(2026, 11, 18)]
    assert [text[span.start : span.end] for span in spans] == ["March 5th, 1980", "2026-11-18"]


@pytest.mark.parametrize(
    ("heard", "whole"),
    [
        ("March 5th, 1985.", True),
        ("march fifth nineteen eighty five", True),
        ("March 5th, 1980.", False),  # "nineteen eighty ... five" may follow
        ("march fifth nineteen eighty", False),
        ("March 5th,", False),  # the year is still to come
        ("March fifth, nineteen", False),
        ("July 4th, 2000", False),  # "... and five" may follow
        ("the fourth of July two thousand", False),
        ("July 4th, 2005", True),
    ],
)
def test_a_whole_date_is_one_more_words_could_not_change(heard: str, whole: bool) -> None:
    assert states_whole_date(heard) is whole

"""What the evaluation counts as a wrong fact and as a leak, checked independently of the code meant to prevent both.

Wrong fact: a date, amount, card ending, tracking number, carrier or merchant stated in a reply that the
caller's own records do not hold (`customer_facts`), or any such fact stated before the caller was
verified (that is also a leak). Facts are read back from the reply text with patterns of their own,
not by asking the templates what they wrote.

Leak: in a reply, a stored turn or a model prompt, any of
- a date of birth of any customer of the bank, in any form `find_dates` reads (written or spoken);
- a card-number-like digit string (13 to 19 Luhn-valid digits) that is not one of the caller's
  tracking numbers (which the bot spells out on purpose);
- a secret of the dialogue: a PIN or card number said aloud, a one-time code, a date of birth typed;
- in a stored caller turn or a prompt, the card ending typed to verify (only the bot names cards);
- in a prompt, any digit string longer than `PROMPT_MAX_DIGITS`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Final

from banking.backend import AuthLevel, BankBackend, Principal
from banking.dates import MONTHS, find_dates
from banking.numbers import digit_runs, tokenize
from banking.redact import PAN_MIN_DIGITS, PROMPT_MAX_DIGITS, contains_pan

ALL_TRANSACTIONS: Final = 10  # more than any reply tells, so every told one is in the truth
_MONTH_NAMES: Final = "|".join(name.capitalize() for name in MONTHS if len(name) > 3 or name == "may")
_DATE_RE: Final = re.compile(rf"\b({_MONTH_NAMES}) (\d{{1,2}}), (\d{{4}})\b")
_MONEY_RE: Final = re.compile(
    r"\b(\d{1,3}(?:,\d{3})*) (?:dollars?|euros?|pounds?)(?: and (\d{1,2}) (?:cents?|pence|penny))?"
)
_ENDING_RE: Final = re.compile(r"\bending in (\d(?: \d){3})\b")
_TRACKING_RE: Final = re.compile(r"\btracking number is ((?:[0-9A-Z] )*[0-9A-Z])\b")
_CARRIER_RE: Final = re.compile(r"\bwith ([A-Z][A-Za-z]+)\b")
_MERCHANT_RE: Final = re.compile(r"\b(?:dollars?|cents?|euros?|pounds?|pence|penny) at ([^,.]+)")


class FactKind(StrEnum):
    DATE = "date"
    AMOUNT = "amount"
    CARD_ENDING = "card_ending"
    TRACKING = "tracking_number"
    CARRIER = "carrier"
    MERCHANT = "merchant"


@dataclass(frozen=True, slots=True)
class Stated:
    kind: FactKind
    value: str


@dataclass(frozen=True, slots=True)
class Facts:
    """What one customer's records hold, in the forms a reply could state them."""

    facts: frozenset[Stated]

    def holds(self, stated: Stated) -> bool:
        return stated in self.facts


def _date(day: dt.date) -> Stated:
    return Stated(FactKind.DATE, day.isoformat())


def _amount(amount: Decimal) -> Stated:
    return Stated(FactKind.AMOUNT, str(abs(amount).quantize(Decimal("0.01"))))


async def customer_facts(bank: BankBackend, customer_id: str) -> Facts:
    """Everything a reply may tell this customer, read from the bank as a verified caller would."""
    principal = Principal(customer_id, AuthLevel.VERIFIED)
    facts: set[Stated] = set()
    for shipment in await bank.card_delivery_status(principal):
        facts.update(_date(day) for day in (shipment.shipped_on, shipment.expected_on, shipment.delivered_on) if day)
        facts.add(Stated(FactKind.CARD_ENDING, shipment.card_last4))
        if shipment.tracking_number:
            facts.add(Stated(FactKind.TRACKING, shipment.tracking_number.upper()))
        if shipment.carrier:
            facts.add(Stated(FactKind.CARRIER, shipment.carrier))
    balance = await bank.balance(principal)
    facts.update((_amount(balance.balance), _amount(balance.available_credit)))
    for transaction in await bank.last_transactions(principal, ALL_TRANSACTIONS):
        facts.update((_date(transaction.posted_on), _amount(transaction.amount)))
        facts.add(Stated(FactKind.MERCHANT, transaction.merchant))
    facts.update(Stated(FactKind.CARD_ENDING, card.last4) for card in await bank.list_cards(principal))
    return Facts(frozenset(facts))


def stated_facts(reply: str) -> list[Stated]:
    """The facts a reply states, read back from its words."""
    stated: list[Stated] = []
    for month, day, year in _DATE_RE.findall(reply):
        try:
            stated.append(_date(dt.date(int(year), MONTHS[month.lower()], int(day))))
        except ValueError:
            stated.append(Stated(FactKind.DATE, f"impossible: {month} {day}, {year}"))
    for units, cents in _MONEY_RE.findall(reply):
        stated.append(_amount(Decimal(units.replace(",", "")) + Decimal(cents or 0) / 100))
    stated.extend(Stated(FactKind.CARD_ENDING, ending.replace(" ", "")) for ending in _ENDING_RE.findall(reply))
    stated.extend(Stated(FactKind.TRACKING, code.replace(" ", "")) for code in _TRACKING_RE.findall(reply))
    stated.extend(Stated(FactKind.CARRIER, carrier) for carrier in _CARRIER_RE.findall(reply))
    stated.extend(Stated(FactKind.MERCHANT, merchant.strip()) for merchant in _MERCHANT_RE.findall(reply))
    return stated


class Place(StrEnum):
    REPLY = "reply"
    STORED_CALLER = "stored caller turn"
    STORED_BOT = "stored bot turn"
    PROMPT = "LLM prompt"


@dataclass(frozen=True, slots=True)
class Secrets:
    """What must not reappear: every customer's date of birth, and what this caller said or typed in secret."""

    dates_of_birth: frozenset[dt.date]
    said: tuple[str, ...] = ()  # digit strings: PINs and card numbers said aloud, codes and dates typed
    card_entries: tuple[str, ...] = ()  # card endings typed to verify
    tracking_numbers: frozenset[str] = frozenset()  # long digit strings the bot spells on purpose


def leaks(text: str, secrets: Secrets, place: Place) -> list[str]:
    """What `text` leaks, as short descriptions (never the secret itself); empty when nothing."""
    found: list[str] = []
    if any(span.value in secrets.dates_of_birth for span in find_dates(text)):
        found.append("date of birth")
    runs = [run.digits for run in digit_runs(tokenize(text))]
    for digits in runs:
        if len(digits) >= PAN_MIN_DIGITS and contains_pan(digits) and digits not in secrets.tracking_numbers:
            found.append("card-number-like digits")
    if any(secret in digits for secret in secrets.said for digits in runs):
        found.append("a secret the caller said or typed")
    if place in (Place.STORED_CALLER, Place.PROMPT) and any(
        entry in digits for entry in secrets.card_entries for digits in runs
    ):
        found.append("the card ending typed to verify")
    if place is Place.PROMPT and any(len(digits) > PROMPT_MAX_DIGITS for digits in runs):
        found.append("a digit string in a model prompt")
    return found

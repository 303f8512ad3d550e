"""Tests for banking.templates: what is said is built only from the backend facts given to it."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest

from banking import templates
from banking.backend import Balance, Card, CardStatus, Shipment, ShipmentStatus, Transaction
from banking.intents import Intent

TODAY = dt.date(2026, 11, 21)


def shipment(**changes: object) -> Shipment:
    fields: dict[str, object] = {
        "card_last4": "7315",
        "status": ShipmentStatus.IN_TRANSIT,
        "carrier": "UPS",
        "tracking_number": "1Z999AA10123456784",
        "shipped_on": dt.date(2026, 11, 18),
        "expected_on": dt.date(2026, 11, 24),
        "delivered_on": None,
        "undeliverable": False,
    }
    fields.update(changes)
    return Shipment(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "currency", "spoken"),
    [
        (Decimal("1234.56"), "USD", "1,234 dollars and 56 cents"),
        (Decimal("1.01"), "USD", "1 dollar and 1 cent"),
        (Decimal("20"), "USD", "20 dollars"),
        (Decimal("0.005"), "USD", "0 dollars and 1 cent"),
        (Decimal("-150.00"), "USD", "150 dollars"),
        (Decimal("12.5"), "GBP", "12 pounds and 50 pence"),
        (Decimal("99.99"), "CHF", "99.99 CHF"),
    ],
)
def test_money_is_spoken_in_words_around_the_digits(amount: Decimal, currency: str, spoken: str) -> None:
    assert templates.money(amount, currency) == spoken


def test_codes_are_spelled_and_dates_spoken() -> None:
    assert templates.spell("1z99") == "1 Z 9 9"
    assert templates.card_name("0005") == "the card ending in 0 0 0 5"
    assert templates.spoken_date(dt.date(2026, 11, 4)) == "November 4, 2026"


def test_in_transit_report_states_carrier_tracking_and_expected_date_from_the_shipment() -> None:
    text = templates.delivery_report([shipment()], TODAY)
    assert text == (
        "The card ending in 7 3 1 5 was shipped with UPS on November 18, 2026. "
        "The tracking number is 1 Z 9 9 9 A A 1 0 1 2 3 4 5 6 7 8 4. "
        "It's expected to arrive by November 24, 2026."
    )


def test_every_digit_said_about_a_delivery_comes_from_the_shipment() -> None:
    facts = shipment(carrier="FedEx", tracking_number="786512345678", expected_on=dt.date(2026, 12, 3))
    text = templates.delivery_report([facts], TODAY)
    said = re.sub(r"\D", "", text)
    expected = "7315" + "182026" + "786512345678" + "32026"  # ending, shipped date, tracking, expected date
    assert said == expected
    assert "FedEx" in text and "UPS" not in text


def test_missing_facts_are_left_out_never_invented() -> None:
    text = templates.delivery_report(
        [
            shipment(
                status=ShipmentStatus.PREPARING, carrier=None, tracking_number=None, shipped_on=None, expected_on=None
            )
        ],
        TODAY,
    )
    assert text == "The card ending in 7 3 1 5 is being prepared and hasn't shipped yet."
    for carrier in ("UPS", "FedEx", "USPS", "DHL", "tracking", "expected"):
        assert carrier not in text


def test_a_late_shipment_is_told_as_late() -> None:
    text = templates.delivery_report([shipment(expected_on=dt.date(2026, 11, 19))], TODAY)
    assert "It was expected by November 19, 2026, so it's running late." in text


def test_delivered_out_for_delivery_and_returned_reports() -> None:
    delivered = shipment(status=ShipmentStatus.DELIVERED, delivered_on=dt.date(2026, 11, 10))
    assert (
        templates.delivery_report([delivered], TODAY)
        == "The card ending in 7 3 1 5 was delivered on November 10, 2026."
    )
    out = templates.delivery_report([shipment(status=ShipmentStatus.OUT_FOR_DELIVERY)], TODAY)
    assert out.startswith("The card ending in 7 3 1 5 is out for delivery with UPS today.")
    returned = [shipment(status=ShipmentStatus.RETURNED, undeliverable=True)]
    assert templates.delivery_report(returned, TODAY).endswith(templates.UNDELIVERABLE_OFFER)
    assert templates.needs_agent(returned)
    assert not templates.needs_agent([delivered])


def test_open_shipments_are_told_before_past_deliveries_and_an_empty_list_says_so() -> None:
    delivered = shipment(card_last4="1881", status=ShipmentStatus.DELIVERED, delivered_on=dt.date(2023, 3, 27))
    text = templates.delivery_report([shipment(), delivered], TODAY)
    assert "7 3 1 5" in text and "1 8 8 1" not in text
    assert templates.delivery_report([delivered], TODAY).startswith("The card ending in 1 8 8 1 was delivered")
    assert templates.delivery_report([], TODAY) == templates.NO_SHIPMENT


def test_balance_and_transactions_reports() -> None:
    assert templates.balance_report(Balance("USD", Decimal("79.19"), Decimal("2920.81"))) == (
        "Your current balance is 79 dollars and 19 cents, and your available credit is 2,920 dollars and 81 cents."
    )
    assert templates.balance_report(Balance("USD", Decimal("-12.00"), Decimal("3000"))).startswith(
        "You have a credit of 12 dollars"
    )
    text = templates.transactions_report(
        [
            Transaction(dt.date(2026, 11, 17), Decimal("51.82"), "USD", "Harbor Hardware", True),
            Transaction(dt.date(2026, 11, 4), Decimal("-150.00"), "USD", "Payment, thank you", False),
        ]
    )
    assert text == (
        "Here are your last 2 transactions. On November 17, 2026, 51 dollars and 82 cents at Harbor Hardware, "
        "still pending. On November 4, 2026, a credit of 150 dollars."
    )
    assert templates.transactions_report([]) == templates.NO_TRANSACTIONS


def test_card_menu_and_card_changes_name_cards_by_their_endings() -> None:
    cards = [Card("K1", "5100", CardStatus.ACTIVE), Card("K2", "6011", CardStatus.ACTIVE)]
    assert templates.card_menu(cards, Intent.LOCK_CARD) == (
        "Which card would you like to lock? For the card ending in 5 1 0 0, press 1. "
        "For the card ending in 6 0 1 1, press 2."
    )
    assert templates.card_changed(Intent.UNLOCK_CARD, cards[1]).startswith("I've unlocked the card ending in 6 0 1 1.")
    assert "permanently block the card ending in 5 1 0 0" in templates.confirm_block(cards[0])


def test_fixed_sentences_hold_no_digits_a_caller_could_take_for_a_fact() -> None:
    fixed = [value for name, value in vars(templates).items() if name.isupper() and isinstance(value, str)]
    for sentence in fixed:
        assert not re.search(r"\d", sentence), sentence

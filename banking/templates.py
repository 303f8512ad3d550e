"""Everything the line says, as fixed sentences and templates filled only with backend facts.

No fact (date, amount, carrier, tracking number, card ending) is ever written here or produced by a
model: each comes in as a field of a backend dataclass. Text is written for a speech synthesiser on a
phone line: short sentences, codes spelled out character by character ("7 3 1 5", not "seven thousand
three hundred fifteen"), amounts in words around the digits, and no digit string a redactor would take
for a card number.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

from banking.backend import Balance, Card, Shipment, ShipmentStatus, Transaction
from banking.intents import Intent

BANK_NAME: Final = "Example Bank"
MAX_SHIPMENTS_TOLD: Final = 2

SERVICES: Final = (
    "I can tell you where your new card is, block a lost or stolen card, lock, unlock or activate a card, "
    "or give you your balance or recent transactions."
)
ASK_REQUEST: Final = "What can I help you with?"
ANYTHING_ELSE: Final = "Is there anything else I can help you with?"
NOT_UNDERSTOOD: Final = "Sorry, I didn't get that."
NO_INPUT: Final = "Sorry, I didn't hear anything."
NO_INPUT_GOODBYE: Final = "Sorry, I still can't hear you. Please call us again."
NO_AGENT: Final = "I'm sorry, no agent is available right now."
CALL_AGAIN: Final = "Please call us again later."
SMALL_TALK: Final = "I'm happy to help."
ASK_AGAIN: Final = "Sorry, you may have missed my question."
ASK_DOB: Final = "First I need to verify your identity. Please tell me your date of birth."
ASK_DOB_AGAIN: Final = "Please tell me your date of birth, for example, July fourth, nineteen seventy-five."
ASK_FACTOR: Final = (
    "Thank you. Now please enter the last four digits of your card on your keypad, "
    "or press star to get a one-time code by text message."
)
USE_KEYPAD: Final = "For your security, please don't say them out loud. Use your phone's keypad instead."
OTP_SENT: Final = (
    "If your details match our records and we have your mobile number, we've just sent you a six-digit code. "
    "Please enter it now, or press star to enter your card's last four digits instead."
)
ASK_OTP: Final = (
    "Please enter the six-digit code from the text message on your keypad, or press star to enter your card's "
    "last four digits instead."
)
ASK_FACTOR_AGAIN: Final = (
    "Please enter the last four digits of your card on your keypad, or press star to get a one-time code."
)
ASK_MENU_CHOICE: Final = "Please press the number of the card on your keypad."
VERIFIED: Final = "Thank you, you're verified."
NOT_VERIFIED: Final = "Sorry, those details don't match our records. Let's try again."
LOCKED_OUT: Final = (
    "Sorry, I couldn't verify your identity. For your security, I'm transferring you to an agent who can help."
)
VOICE_LOCKED: Final = (
    "For your security, verification by phone is temporarily locked on your profile. I'm transferring you to an agent."
)
UNKNOWN_CALLER: Final = (
    "I couldn't find the number you're calling from in our records, so I'll transfer you to an agent who can help."
)
AMBIGUOUS_CALLER: Final = "I couldn't tell which customer you are, so I'll transfer you to an agent."
REFUSAL: Final = (
    "I can only help with your own cards and accounts, after verifying your identity, and I can't change how I work."
)
TRANSFER: Final = "Let me transfer you to an agent. Please hold."
TRANSFER_ANGRY: Final = "I'm sorry about the trouble. Let me get you to an agent who can help. Please hold."
TRANSFER_AFTER_MISUNDERSTANDING: Final = "Sorry, I'm having trouble understanding. Let me transfer you to an agent."
UNAVAILABLE: Final = "Sorry, I can't reach our systems right now. Let me transfer you to an agent."
TECHNICAL_TROUBLE: Final = "I'm sorry, I'm having technical trouble. Let me transfer you to an agent."
GOODBYE: Final = "Thank you for calling " + BANK_NAME + ". Goodbye."
ASK_YES_NO: Final = "Please say yes or no."
CANCELLED: Final = "Okay, I won't change anything."
OKAY: Final = "Okay."
NO_SHIPMENT: Final = "I don't see any card on its way to you."
NO_TRANSACTIONS: Final = "I don't see any recent transactions on your account."
OUT_OF_SCOPE: Final = "I'm sorry, I can't do that on this line."
OFFER_AGENT: Final = "Would you like me to put you through to an agent?"
UNDELIVERABLE_OFFER: Final = "Would you like me to transfer you to an agent to update your address?"
RESUMED: Final = "Sorry about that, let's continue."

_NO_CARD_FOR: Final = {
    Intent.LOST_STOLEN: "I don't see a card that can be blocked.",
    Intent.LOCK_CARD: "I don't see an active card that can be locked.",
    Intent.UNLOCK_CARD: "I don't see a locked card. Only a card you locked yourself can be unlocked here.",
    Intent.ACTIVATE_CARD: "I don't see a card waiting to be activated.",
}
_DONE: Final = {
    Intent.LOST_STOLEN: "I've permanently blocked {card}. It can no longer be used.",
    Intent.LOCK_CARD: "I've locked {card}. You can unlock it any time by calling us.",
    Intent.UNLOCK_CARD: "I've unlocked {card}. You can use it again right away.",
    Intent.ACTIVATE_CARD: "I've activated {card}. It's ready to use.",
}
_VERB: Final = {
    Intent.LOST_STOLEN: "block",
    Intent.LOCK_CARD: "lock",
    Intent.UNLOCK_CARD: "unlock",
    Intent.ACTIVATE_CARD: "activate",
}
_CURRENCY_WORDS: Final = {
    "USD": ("dollar", "dollars", "cent", "cents"),
    "EUR": ("euro", "euros", "cent", "cents"),
    "GBP": ("pound", "pounds", "penny", "pence"),
}
_CENT: Final = Decimal("0.01")


def greeting(bank_name: str = BANK_NAME) -> str:
    return f"Welcome to {bank_name} card services. {SERVICES} {ASK_REQUEST}"


def spell(code: str) -> str:
    """A code as separate characters, so it is read out one by one: "1Z99" -> "1 Z 9 9"."""
    return " ".join(code.upper())


def card_name(last4: str) -> str:
    return f"the card ending in {spell(last4)}"


def spoken_date(day: dt.date) -> str:
    return f"{day:%B} {day.day}, {day.year}"


def money(amount: Decimal, currency: str) -> str:
    """A non-negative amount in words around the digits: "1,234 dollars and 5 cents"."""
    cents_total = int(abs(amount).quantize(_CENT, rounding=ROUND_HALF_UP) * 100)
    units, cents = divmod(cents_total, 100)
    words = _CURRENCY_WORDS.get(currency.upper())
    if words is None:
        return f"{units:,}.{cents:02d} {currency.upper()}"
    one, many, cent_one, cent_many = words
    text = f"{units:,} {one if units == 1 else many}"
    if cents:
        text += f" and {cents} {cent_one if cents == 1 else cent_many}"
    return text


def _shipment_sentence(shipment: Shipment, today: dt.date) -> str:
    card = card_name(shipment.card_last4)
    card_title = card[0].upper() + card[1:]
    carrier = f" with {shipment.carrier}" if shipment.carrier else ""
    tracking = f" The tracking number is {spell(shipment.tracking_number)}." if shipment.tracking_number else ""
    if shipment.undeliverable or shipment.status is ShipmentStatus.RETURNED:
        return f"{card_title} couldn't be delivered and was returned to us.{tracking} {UNDELIVERABLE_OFFER}"
    if shipment.status is ShipmentStatus.DELIVERED:
        when = f" on {spoken_date(shipment.delivered_on)}" if shipment.delivered_on else ""
        return f"{card_title} was delivered{when}."
    if shipment.status is ShipmentStatus.PREPARING:
        when = f" It should arrive by {spoken_date(shipment.expected_on)}." if shipment.expected_on else ""
        return f"{card_title} is being prepared and hasn't shipped yet.{when}"
    if shipment.status is ShipmentStatus.OUT_FOR_DELIVERY:
        return f"{card_title} is out for delivery{carrier} today.{tracking}"
    sent = f" on {spoken_date(shipment.shipped_on)}" if shipment.shipped_on else ""
    sentence = f"{card_title} was shipped{carrier}{sent}.{tracking}"
    if shipment.expected_on is not None and shipment.expected_on < today:
        return f"{sentence} It was expected by {spoken_date(shipment.expected_on)}, so it's running late."
    if shipment.expected_on is not None:
        return f"{sentence} It's expected to arrive by {spoken_date(shipment.expected_on)}."
    return sentence


def needs_agent(shipments: Sequence[Shipment]) -> bool:
    """Whether the delivery report ends with an offer to transfer (a returned card)."""
    return any(shipment.undeliverable or shipment.status is ShipmentStatus.RETURNED for shipment in _told(shipments))


def _told(shipments: Sequence[Shipment]) -> list[Shipment]:
    """The shipments worth telling: those not delivered yet, else the most recent delivery."""
    open_ = [shipment for shipment in shipments if shipment.status is not ShipmentStatus.DELIVERED]
    return open_[:MAX_SHIPMENTS_TOLD] if open_ else list(shipments[:1])


def delivery_report(shipments: Sequence[Shipment], today: dt.date) -> str:
    told = _told(shipments)
    if not told:
        return NO_SHIPMENT
    # A returned card's offer to transfer must be the last sentence, since it asks a question.
    told.sort(key=lambda shipment: shipment.undeliverable or shipment.status is ShipmentStatus.RETURNED)
    return " ".join(_shipment_sentence(shipment, today) for shipment in told)


def balance_report(balance: Balance) -> str:
    if balance.balance < 0:
        owed = f"You have a credit of {money(balance.balance, balance.currency)}"
    else:
        owed = f"Your current balance is {money(balance.balance, balance.currency)}"
    return f"{owed}, and your available credit is {money(balance.available_credit, balance.currency)}."


def transactions_report(transactions: Sequence[Transaction]) -> str:
    if not transactions:
        return NO_TRANSACTIONS
    items: list[str] = []
    for transaction in transactions:
        amount = money(transaction.amount, transaction.currency)
        what = f"{amount} at {transaction.merchant}" if transaction.amount >= 0 else f"a credit of {amount}"
        pending = ", still pending" if transaction.pending else ""
        items.append(f"On {spoken_date(transaction.posted_on)}, {what}{pending}.")
    count = len(transactions)
    lead = "Here is your last transaction." if count == 1 else f"Here are your last {count} transactions."
    return " ".join([lead, *items])


def card_menu(cards: Sequence[Card], intent: Intent) -> str:
    options = " ".join(f"For {card_name(card.last4)}, press {number}." for number, card in enumerate(cards, 1))
    return f"Which card would you like to {_VERB[intent]}? {options}"


def confirm_block(card: Card) -> str:
    return (
        f"To confirm: you want to permanently block {card_name(card.last4)}? "
        "It can't be used again after that. Please say yes or no."
    )


def confirm_change(intent: Intent, card: Card) -> str:
    """The question before a card change: always before a block, before others when the request was unclear."""
    if intent is Intent.LOST_STOLEN:
        return confirm_block(card)
    return f"Just to check: you want me to {_VERB[intent]} {card_name(card.last4)}? Please say yes or no."


def no_eligible_card(intent: Intent) -> str:
    return _NO_CARD_FOR[intent]


def card_changed(intent: Intent, card: Card) -> str:
    return _DONE[intent].format(card=card_name(card.last4))


def card_state_changed(intent: Intent) -> str:
    """When the card changed state between the menu and the request (another channel acted first)."""
    return f"Sorry, I couldn't {_VERB[intent]} that card: its status has just changed."

"""The bank as the dialogue sees it: the `BankBackend` protocol, its facts, its errors and its access policy.

Two kinds of call:
- identification and verification (`find_customers_by_ani`, `verify_*`, `send_otp`, voice lock): they
  establish who is calling, so they need no principal. Verifications compare in constant time and
  answer only True/False, never which part was wrong; a customer whose voice access is locked never
  verifies.
- services (cards, deliveries, balance, transactions and card changes): they take the `Principal` the
  call has earned. The backend checks it itself, against `REQUIRED_LEVEL` and against ownership (a card
  is only found among the principal's own cards), and never trusts its caller to have checked first.

Facts are frozen dataclasses: what the dialogue tells a caller (dates, amounts, carriers, tracking
numbers, card endings) comes from these and from nowhere else.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Final, Protocol


class AuthLevel(IntEnum):
    ANI = 0  # the calling number is on file for this customer: identifies, proves nothing
    VERIFIED = 1  # date of birth plus the last four digits of a card or a one-time code


class Operation(StrEnum):
    LIST_CARDS = "list_cards"
    DELIVERY_STATUS = "delivery_status"
    BLOCK_CARD = "block_card"
    LOCK_CARD = "lock_card"
    UNLOCK_CARD = "unlock_card"
    ACTIVATE_CARD = "activate_card"
    BALANCE = "balance"
    TRANSACTIONS = "transactions"


# A calling number can be spoofed, so everything that reveals or changes something needs verification.
REQUIRED_LEVEL: Final[Mapping[Operation, AuthLevel]] = MappingProxyType(dict.fromkeys(Operation, AuthLevel.VERIFIED))


@dataclass(frozen=True, slots=True)
class Principal:
    """The customer a call has identified, and how strongly."""

    customer_id: str
    level: AuthLevel


class BankError(Exception):
    """Base of every error a backend raises on purpose."""


class NotAuthorized(BankError):
    def __init__(self, operation: Operation, level: AuthLevel) -> None:
        super().__init__(f"{operation} needs auth level {REQUIRED_LEVEL[operation]}, the call has {level}")
        self.operation = operation
        self.level = level


class NotFound(BankError):
    """No such card or account among the principal's own (whether it exists elsewhere is not told)."""


class InvalidCardState(BankError):
    """The card is in a state the operation does not apply to (unlocking a card that is not locked)."""


class BackendUnavailable(BankError):
    """The bank could not be reached or failed; nothing is known about the request's effect."""


def authorize(principal: Principal, operation: Operation) -> None:
    """Raise `NotAuthorized` unless `principal` holds the level `operation` needs."""
    if principal.level < REQUIRED_LEVEL[operation]:
        raise NotAuthorized(operation, principal.level)


class CardStatus(StrEnum):
    INACTIVE = "inactive"  # issued, not yet activated
    ACTIVE = "active"
    LOCKED = "locked"  # temporarily, by the customer; unlockable
    BLOCKED = "blocked"  # permanently (lost, stolen, fraud)


class ShipmentStatus(StrEnum):
    PREPARING = "preparing"
    SHIPPED = "shipped"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    RETURNED = "returned"


# Each card change: the states it applies to, and the state it leaves the card in.
CARD_TRANSITIONS: Final[Mapping[Operation, tuple[frozenset[CardStatus], CardStatus]]] = MappingProxyType(
    {
        Operation.BLOCK_CARD: (
            frozenset({CardStatus.ACTIVE, CardStatus.LOCKED, CardStatus.INACTIVE}),
            CardStatus.BLOCKED,
        ),
        Operation.LOCK_CARD: (frozenset({CardStatus.ACTIVE}), CardStatus.LOCKED),
        Operation.UNLOCK_CARD: (frozenset({CardStatus.LOCKED}), CardStatus.ACTIVE),
        Operation.ACTIVATE_CARD: (frozenset({CardStatus.INACTIVE}), CardStatus.ACTIVE),
    }
)


@dataclass(frozen=True, slots=True)
class Card:
    card_id: str
    last4: str
    status: CardStatus


@dataclass(frozen=True, slots=True)
class Shipment:
    """The latest shipment of one card."""

    card_last4: str
    status: ShipmentStatus
    carrier: str | None
    tracking_number: str | None
    shipped_on: dt.date | None
    expected_on: dt.date | None
    delivered_on: dt.date | None
    undeliverable: bool


@dataclass(frozen=True, slots=True)
class Balance:
    currency: str
    balance: Decimal  # what the customer owes on the card account; negative is a credit
    available_credit: Decimal


@dataclass(frozen=True, slots=True)
class Transaction:
    posted_on: dt.date
    amount: Decimal  # positive: a charge; negative: a payment or refund
    currency: str
    merchant: str
    pending: bool


_E164_RE: Final = re.compile(r"\+[1-9]\d{6,14}")


def normalize_phone(number: str, default_country_code: str = "1") -> str | None:
    """The E.164 form of a calling number ("+12025550101"), or None when it is not a phone number.

    Networks present the same number as "+1 202 555 0101", "12025550101" or "2025550101"; a bank's
    records hold E.164. A ten-digit national number is taken as North American (`default_country_code`).
    """
    stripped = re.sub(r"[\s().\-]", "", number)
    if stripped.startswith("00"):
        stripped = "+" + stripped[2:]
    if not stripped.startswith("+"):
        if not stripped.isdigit():
            return None
        national = len(stripped) == 10 and default_country_code == "1"
        stripped = "+" + (default_country_code + stripped if national else stripped)
    return stripped if _E164_RE.fullmatch(stripped) else None


class BankBackend(Protocol):
    # -- identification and verification: no principal yet --
    async def find_customers_by_ani(self, ani: str) -> list[str]:
        """Ids of the customers with this phone on file (several when a phone is shared), sorted."""
        ...

    async def verify_dob(self, customer_id: str, dob: dt.date) -> bool: ...

    async def verify_card_last4(self, customer_id: str, last4: str) -> bool:
        """True when `last4` ends one of the customer's cards that is not permanently blocked."""
        ...

    async def send_otp(self, customer_id: str) -> bool:
        """Send a one-time code to the customer's mobile on file; False when there is none or access is locked."""
        ...

    async def verify_otp(self, customer_id: str, code: str) -> bool: ...

    async def is_voice_locked(self, customer_id: str) -> bool: ...

    async def lock_voice_access(self, customer_id: str) -> None:
        """Refuse voice verification for this customer for a while (after repeated failures)."""
        ...

    # -- services: each checks the principal itself --
    async def list_cards(self, principal: Principal) -> list[Card]: ...

    async def card_delivery_status(self, principal: Principal) -> list[Shipment]:
        """The latest shipment of each of the customer's cards, most recent first."""
        ...

    async def block_card(self, principal: Principal, card_id: str) -> Card: ...

    async def lock_card(self, principal: Principal, card_id: str) -> Card: ...

    async def unlock_card(self, principal: Principal, card_id: str) -> Card: ...

    async def activate_card(self, principal: Principal, card_id: str) -> Card: ...

    async def balance(self, principal: Principal) -> Balance: ...

    async def last_transactions(self, principal: Principal, limit: int = 3) -> list[Transaction]: ...

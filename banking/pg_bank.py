"""The reference bank (schema `bank`, sql/0003 and 0004) behind the `BankBackend` protocol, on an asyncpg pool.

Every service checks the principal itself: its level against `REQUIRED_LEVEL`, and ownership in the
query (`WHERE customer_id = principal`), so a card id of another customer is simply not found. Secrets
are compared in constant time (`hmac.compare_digest`) after fetching, never in a `WHERE` clause whose
timing or row count would tell a guess from a near miss. Database failures become `BackendUnavailable`.

One-time codes are random, kept only as a salted SHA-256, expire after `otp_ttl`, allow
`OTP_MAX_ATTEMPTS` tries, and reach the customer through an `OtpSender` (an SMS gateway in production).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, Protocol

import asyncpg

from banking.backend import (
    CARD_TRANSITIONS,
    BackendUnavailable,
    Balance,
    Card,
    CardStatus,
    InvalidCardState,
    NotFound,
    Operation,
    Principal,
    Shipment,
    ShipmentStatus,
    Transaction,
    authorize,
    normalize_phone,
)

log = logging.getLogger(__name__)

OTP_DIGITS: Final = 6
OTP_MAX_ATTEMPTS: Final = 3
MAX_TRANSACTIONS: Final = 10
_STORAGE_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class OtpSender(Protocol):
    async def send(self, phone_e164: str, code: str) -> None:
        """Deliver `code` to the phone (by text message); must never log the code."""
        ...


class UndeliveredOtpSender:
    """For a reference bank with no SMS gateway: records that a code was issued, never the code itself."""

    async def send(self, phone_e164: str, code: str) -> None:
        log.warning("one-time code issued for a phone ending %s, but no SMS gateway is configured", phone_e164[-2:])


def _otp_digest(salt: bytes, code: str) -> bytes:
    return hashlib.sha256(salt + code.encode("ascii")).digest()


def _card(row: Any) -> Card:
    return Card(card_id=row["card_id"], last4=row["last4"], status=CardStatus(row["status"]))


class PgBank:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        otp_sender: OtpSender | None = None,
        otp_ttl: dt.timedelta = dt.timedelta(minutes=5),
        voice_lockout: dt.timedelta = dt.timedelta(hours=24),
    ) -> None:
        self._pool = pool
        self._otp_sender: OtpSender = otp_sender or UndeliveredOtpSender()
        self._otp_ttl = otp_ttl
        self._voice_lockout = voice_lockout

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _STORAGE_ERRORS as exc:
            log.error("reference bank unavailable: %s: %s", type(exc).__name__, exc)
            raise BackendUnavailable(f"reference bank unavailable: {type(exc).__name__}") from exc

    # -- identification and verification --

    async def find_customers_by_ani(self, ani: str) -> list[str]:
        phone = normalize_phone(ani)
        if phone is None:
            return []
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT customer_id FROM bank.phones WHERE e164 = $1 ORDER BY customer_id", phone
            )
        return [row["customer_id"] for row in rows]

    async def _unlocked_customer(self, conn: Any, customer_id: str) -> Any:
        """The customer's row, or None when unknown or voice-locked (both simply fail verification)."""
        return await conn.fetchrow(
            "SELECT customer_id, date_of_birth FROM bank.customers "
            "WHERE customer_id = $1 AND (voice_locked_until IS NULL OR voice_locked_until <= now())",
            customer_id,
        )

    async def verify_dob(self, customer_id: str, dob: dt.date) -> bool:
        async with self._connection() as conn:
            row = await self._unlocked_customer(conn, customer_id)
        if row is None:
            return False
        return hmac.compare_digest(row["date_of_birth"].isoformat(), dob.isoformat())

    async def verify_card_last4(self, customer_id: str, last4: str) -> bool:
        if len(last4) != 4 or not last4.isascii() or not last4.isdigit():
            return False
        async with self._connection() as conn:
            if await self._unlocked_customer(conn, customer_id) is None:
                return False
            # A blocked card may be in a thief's hands: its ending proves nothing.
            rows = await conn.fetch(
                "SELECT last4 FROM bank.cards WHERE customer_id = $1 AND status <> 'blocked'", customer_id
            )
        matched = False
        for row in rows:  # no early exit: the time taken must not tell which card matched
            matched |= hmac.compare_digest(row["last4"], last4)
        return matched

    async def send_otp(self, customer_id: str) -> bool:
        async with self._connection() as conn, conn.transaction():
            if await self._unlocked_customer(conn, customer_id) is None:
                return False
            phone = await conn.fetchval(
                "SELECT e164 FROM bank.phones WHERE customer_id = $1 AND kind = 'mobile' ORDER BY e164 LIMIT 1",
                customer_id,
            )
            if phone is None:
                return False
            code = f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"
            salt = secrets.token_bytes(16)
            await conn.execute("UPDATE bank.otp_challenges SET used = true WHERE customer_id = $1", customer_id)
            await conn.execute(
                "INSERT INTO bank.otp_challenges (customer_id, salt, code_sha256, expires_at) "
                "VALUES ($1, $2, $3, now() + $4::interval)",
                customer_id,
                salt,
                _otp_digest(salt, code),
                self._otp_ttl,
            )
        await self._otp_sender.send(phone, code)
        return True

    async def verify_otp(self, customer_id: str, code: str) -> bool:
        well_formed = len(code) == OTP_DIGITS and code.isascii() and code.isdigit()
        async with self._connection() as conn, conn.transaction():
            if await self._unlocked_customer(conn, customer_id) is None:
                return False
            challenge = await conn.fetchrow(
                "SELECT challenge_id, salt, code_sha256, attempts FROM bank.otp_challenges "
                "WHERE customer_id = $1 AND NOT used AND expires_at > now() "
                "ORDER BY created_at DESC LIMIT 1 FOR UPDATE",
                customer_id,
            )
            if challenge is None:
                return False
            matched = well_formed and hmac.compare_digest(
                bytes(challenge["code_sha256"]), _otp_digest(bytes(challenge["salt"]), code)
            )
            attempts = challenge["attempts"] + 1
            await conn.execute(
                "UPDATE bank.otp_challenges SET attempts = $2, used = $3 WHERE challenge_id = $1",
                challenge["challenge_id"],
                attempts,
                matched or attempts >= OTP_MAX_ATTEMPTS,
            )
        return matched

    async def is_voice_locked(self, customer_id: str) -> bool:
        async with self._connection() as conn:
            locked = await conn.fetchval(
                "SELECT voice_locked_until > now() FROM bank.customers WHERE customer_id = $1", customer_id
            )
        return bool(locked)

    async def lock_voice_access(self, customer_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE bank.customers SET voice_locked_until = now() + $2::interval WHERE customer_id = $1",
                customer_id,
                self._voice_lockout,
            )
        log.warning("voice access locked for customer %s for %s", customer_id, self._voice_lockout)

    # -- services --

    async def list_cards(self, principal: Principal) -> list[Card]:
        authorize(principal, Operation.LIST_CARDS)
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT card_id, last4, status FROM bank.cards WHERE customer_id = $1 ORDER BY issued_on, card_id",
                principal.customer_id,
            )
        return [_card(row) for row in rows]

    async def card_delivery_status(self, principal: Principal) -> list[Shipment]:
        authorize(principal, Operation.DELIVERY_STATUS)
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT * FROM ("
                "  SELECT DISTINCT ON (s.card_id) c.last4, s.status, s.carrier, s.tracking_number, s.shipped_on,"
                "         s.expected_on, s.delivered_on, s.undeliverable, s.created_at, s.shipment_id"
                "  FROM bank.card_shipments s JOIN bank.cards c USING (card_id)"
                "  WHERE c.customer_id = $1"
                "  ORDER BY s.card_id, s.created_at DESC, s.shipment_id DESC"
                ") latest ORDER BY created_at DESC, shipment_id DESC",
                principal.customer_id,
            )
        return [
            Shipment(
                card_last4=row["last4"],
                status=ShipmentStatus(row["status"]),
                carrier=row["carrier"],
                tracking_number=row["tracking_number"],
                shipped_on=row["shipped_on"],
                expected_on=row["expected_on"],
                delivered_on=row["delivered_on"],
                undeliverable=row["undeliverable"],
            )
            for row in rows
        ]

    async def _change_card(self, principal: Principal, card_id: str, operation: Operation) -> Card:
        authorize(principal, operation)
        allowed_from, new_status = CARD_TRANSITIONS[operation]
        async with self._connection() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT card_id, last4, status FROM bank.cards WHERE card_id = $1 AND customer_id = $2 FOR UPDATE",
                card_id,
                principal.customer_id,
            )
            if row is None:
                raise NotFound(f"no card {card_id!r} for customer {principal.customer_id}")
            if CardStatus(row["status"]) not in allowed_from:
                raise InvalidCardState(f"{operation} does not apply to a card that is {row['status']}")
            updated = await conn.fetchrow(
                "UPDATE bank.cards SET status = $2, updated_at = now() WHERE card_id = $1 "
                "RETURNING card_id, last4, status",
                card_id,
                new_status.value,
            )
        log.info("%s: card %s of customer %s is now %s", operation, card_id, principal.customer_id, new_status)
        return _card(updated)

    async def block_card(self, principal: Principal, card_id: str) -> Card:
        return await self._change_card(principal, card_id, Operation.BLOCK_CARD)

    async def lock_card(self, principal: Principal, card_id: str) -> Card:
        return await self._change_card(principal, card_id, Operation.LOCK_CARD)

    async def unlock_card(self, principal: Principal, card_id: str) -> Card:
        return await self._change_card(principal, card_id, Operation.UNLOCK_CARD)

    async def activate_card(self, principal: Principal, card_id: str) -> Card:
        return await self._change_card(principal, card_id, Operation.ACTIVATE_CARD)

    async def balance(self, principal: Principal) -> Balance:
        authorize(principal, Operation.BALANCE)
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT currency, balance, available_credit FROM bank.accounts WHERE customer_id = $1",
                principal.customer_id,
            )
        if row is None:
            raise NotFound(f"no card account for customer {principal.customer_id}")
        return Balance(currency=row["currency"], balance=row["balance"], available_credit=row["available_credit"])

    async def last_transactions(self, principal: Principal, limit: int = 3) -> list[Transaction]:
        authorize(principal, Operation.TRANSACTIONS)
        limit = max(1, min(limit, MAX_TRANSACTIONS))
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT t.posted_at, t.amount, a.currency, t.merchant, t.pending "
                "FROM bank.transactions t JOIN bank.accounts a USING (account_id) "
                "WHERE a.customer_id = $1 ORDER BY t.posted_at DESC, t.transaction_id DESC LIMIT $2",
                principal.customer_id,
                limit,
            )
        return [
            Transaction(
                posted_on=row["posted_at"].astimezone(dt.UTC).date(),
                amount=row["amount"],
                currency=row["currency"],
                merchant=row["merchant"],
                pending=row["pending"],
            )
            for row in rows
        ]

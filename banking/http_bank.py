"""A bank reached over a JSON HTTP API, behind the `BankBackend` protocol: the adapter a real bank would fit.

The API (paths under the base URL; bodies are JSON objects in UTF-8):

    GET  /v1/customers?phone=+12025550101            -> {"customer_ids": ["C000001"]}
    POST /v1/customers/{id}/verify-dob   {"date_of_birth": "1980-03-05"}   -> {"match": true}
    POST /v1/customers/{id}/verify-card  {"last4": "1881"}                 -> {"match": true}
    POST /v1/customers/{id}/otp                                            -> {"sent": true}
    POST /v1/customers/{id}/otp/verify   {"code": "123456"}                -> {"match": false}
    GET  /v1/customers/{id}/voice-lock                                     -> {"locked": false}
    PUT  /v1/customers/{id}/voice-lock                                     -> {"locked": true}
    GET  /v1/customers/{id}/cards                    -> {"cards": [CARD, ...]}
    GET  /v1/customers/{id}/shipments                -> {"shipments": [SHIPMENT, ...]}  (most recent first)
    POST /v1/customers/{id}/cards/{card_id}/{block|lock|unlock|activate}   -> {"card": CARD}
    GET  /v1/customers/{id}/balance    -> {"currency": "USD", "balance": "12.50", "available_credit": "1987.50"}
    GET  /v1/customers/{id}/transactions?limit=3     -> {"transactions": [TRANSACTION, ...]}  (newest first)

    CARD        {"card_id": "K0000011", "last4": "1881", "status": "active"}
    SHIPMENT    {"card_last4", "status", "carrier", "tracking_number", "shipped_on", "expected_on",
                 "delivered_on", "undeliverable"}   (dates "YYYY-MM-DD" or null)
    TRANSACTION {"posted_on": "2026-11-04", "amount": "-150.00", "currency": "USD", "merchant": "...",
                 "pending": false}

Amounts are decimal strings, never JSON numbers (no binary floating point near money). Secrets (date
of birth, card ending, code) travel only in request bodies, never in a URL that proxies log. Service
requests carry `X-Auth-Level` (0 or 1), the level the call has earned; the bank checks it again (403)
besides this client's own check, and checks that the card belongs to the customer (404 otherwise).

Answers: 2xx with the body above; 403 -> `NotAuthorized`; 404 -> `NotFound` (verifications read it as
no match); 409 -> `InvalidCardState`; other 4xx -> `BankError`; 429, 5xx, a timeout, a refused or
broken connection or an unreadable body -> retried, then `BackendUnavailable`.

Resilience: each attempt has `timeout_s` (5 s); up to `retries` (3) more attempts follow a failure,
after a full-jitter exponential backoff. Only safe requests are retried: every GET is a read, and
every other request carries an `Idempotency-Key` header (a UUID, the same on each attempt) with which
the bank answers a repeat with its first answer instead of acting twice (no second text message, no
second block). A circuit breaker (`engines.resilience`, the one the cloud engines use) counts failed
attempts: five in a row open it and requests fail at once for 30 s, then one trial request decides.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from banking.backend import (
    BackendUnavailable,
    Balance,
    BankError,
    Card,
    CardStatus,
    InvalidCardState,
    NotAuthorized,
    NotFound,
    Operation,
    Principal,
    Shipment,
    ShipmentStatus,
    Transaction,
    authorize,
    normalize_phone,
)
from banking.fields import typed
from engines.resilience import BreakerState, CircuitBreaker

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 5.0
DEFAULT_RETRIES: Final = 3
DEFAULT_BACKOFF_BASE_S: Final = 0.2
DEFAULT_BACKOFF_MAX_S: Final = 2.0
MAX_ANSWER_BYTES: Final = 1 << 20  # a bank answer here is a few KiB; more is a fault, not data
AUTH_LEVEL_HEADER: Final = "X-Auth-Level"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
REQUEST_ID_HEADER: Final = "X-Request-Id"
_RETRYABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})
_CARD_ACTIONS: Final[Mapping[Operation, str]] = {
    Operation.BLOCK_CARD: "block",
    Operation.LOCK_CARD: "lock",
    Operation.UNLOCK_CARD: "unlock",
    Operation.ACTIVATE_CARD: "activate",
}


class _Failed(Exception):
    """One attempt that failed in a way worth retrying."""


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """Turn a malformed bank answer into `BackendUnavailable`: nothing trustworthy was learnt."""
    try:
        yield
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        log.error("bank API: unreadable %s: %s: %s", what, type(exc).__name__, exc)
        raise BackendUnavailable(f"unreadable {what} from the bank") from exc


def _optional_date(raw: Mapping[str, Any], name: str) -> dt.date | None:
    value = raw.get(name)
    return None if value is None else dt.date.fromisoformat(typed(raw, name, str))


def _money(raw: Mapping[str, Any], name: str) -> Decimal:
    value = Decimal(typed(raw, name, str))
    if not value.is_finite():
        raise ValueError(f"{name} is not a finite amount")
    return value


def _card(raw: Any) -> Card:
    return Card(typed(raw, "card_id", str), typed(raw, "last4", str), CardStatus(typed(raw, "status", str)))


def _shipment(raw: Any) -> Shipment:
    carrier = raw.get("carrier")
    tracking = raw.get("tracking_number")
    return Shipment(
        card_last4=typed(raw, "card_last4", str),
        status=ShipmentStatus(typed(raw, "status", str)),
        carrier=None if carrier is None else typed(raw, "carrier", str),
        tracking_number=None if tracking is None else typed(raw, "tracking_number", str),
        shipped_on=_optional_date(raw, "shipped_on"),
        expected_on=_optional_date(raw, "expected_on"),
        delivered_on=_optional_date(raw, "delivered_on"),
        undeliverable=typed(raw, "undeliverable", bool),
    )


def _transaction(raw: Any) -> Transaction:
    return Transaction(
        posted_on=dt.date.fromisoformat(typed(raw, "posted_on", str)),
        amount=_money(raw, "amount"),
        currency=typed(raw, "currency", str),
        merchant=typed(raw, "merchant", str),
        pending=typed(raw, "pending", bool),
    )


def _list(raw: Mapping[str, Any], name: str) -> list[Any]:
    items: list[Any] = typed(raw, name, list)
    if not all(isinstance(item, dict) for item in items):
        raise TypeError(f"{name} must be a list of objects")
    return items


class HttpBank:
    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        breaker: CircuitBreaker | None = None,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if timeout_s <= 0 or retries < 0 or backoff_base_s < 0 or backoff_max_s < backoff_base_s:
            raise ValueError("need timeout_s > 0, retries >= 0 and 0 <= backoff_base_s <= backoff_max_s")
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retries = retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._breaker = breaker or CircuitBreaker(name="bank-api")
        self._jitter = jitter

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def close(self) -> None:
        """Close the HTTP session if this client made it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use: a session belongs to the running loop
            self._session = aiohttp.ClientSession(raise_for_status=False)
        return self._session

    def _backoff(self, attempt: int) -> float:
        """Full jitter: calls retrying together spread out instead of hitting the bank in waves."""
        return self._jitter(0.0, min(self._backoff_max_s, self._backoff_base_s * 2**attempt))

    # -- transport --

    async def _attempt(
        self, method: str, url: str, headers: Mapping[str, str], params: Mapping[str, str], body: object
    ) -> tuple[int, Any]:
        try:
            async with self._client().request(
                method, url, params=params, json=body, headers=headers, timeout=self._timeout
            ) as response:
                raw = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise _Failed(f"answer larger than {MAX_ANSWER_BYTES} bytes")
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _Failed(type(exc).__name__) from exc
        if status in _RETRYABLE_STATUS:
            raise _Failed(f"HTTP {status}")
        if not 200 <= status < 300:
            return status, None
        try:
            data = json.loads(raw) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Failed(f"invalid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise _Failed(f"a JSON {type(data).__name__} instead of an object")
        return status, data

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Mapping[str, str] | None = None,
        principal: Principal | None = None,
        operation: Operation | None = None,
    ) -> dict[str, Any]:
        url = self._base_url + path
        headers = {REQUEST_ID_HEADER: str(uuid.uuid4())}
        if method != "GET":  # the same key on every attempt: that is what makes the retry safe
            headers[IDEMPOTENCY_HEADER] = str(uuid.uuid4())
        if principal is not None:
            headers[AUTH_LEVEL_HEADER] = str(int(principal.level))
        failure = "circuit open"
        for attempt in range(self._retries + 1):
            if attempt:
                if self._breaker.state is BreakerState.OPEN:
                    break  # no point waiting to be refused
                await asyncio.sleep(self._backoff(attempt - 1))
            if not self._breaker.allow():
                break
            try:
                status, data = await self._attempt(method, url, headers, params or {}, body)
            except _Failed as exc:
                failure = str(exc)
                self._breaker.record_failure()
                log.warning("bank API %s %s: attempt %d failed: %s", method, path, attempt + 1, failure)
                continue
            self._breaker.record_success()  # the bank answered, even if with a refusal
            if data is not None:
                return data  # type: ignore[no-any-return]
            raise self._refusal(status, method, path, principal, operation)
        raise BackendUnavailable(f"bank API {method} {path}: {failure}")

    @staticmethod
    def _refusal(
        status: int, method: str, path: str, principal: Principal | None, operation: Operation | None
    ) -> BankError:
        if status == 403 and principal is not None and operation is not None:
            return NotAuthorized(operation, principal.level)
        if status == 404:
            return NotFound(f"bank API {method} {path}: not found")
        if status == 409:
            return InvalidCardState(f"bank API {method} {path}: the card's state does not allow it")
        log.error("bank API %s %s refused the request with HTTP %d", method, path, status)
        return BankError(f"bank API {method} {path}: HTTP {status}")

    @staticmethod
    def _customer(customer_id: str) -> str:
        return "/v1/customers/" + quote(customer_id, safe="")

    async def _match(self, path: str, body: Mapping[str, str]) -> bool:
        try:
            data = await self._request("POST", path, body=dict(body))
        except NotFound:
            return False  # an unknown customer simply does not verify
        with _reading("verification"):
            return bool(typed(data, "match", bool))

    # -- identification and verification --

    async def find_customers_by_ani(self, ani: str) -> list[str]:
        phone = normalize_phone(ani)
        if phone is None:
            return []
        data = await self._request("GET", "/v1/customers", params={"phone": phone})
        with _reading("customer list"):
            ids = typed(data, "customer_ids", list)
            if not all(isinstance(item, str) for item in ids):
                raise TypeError("customer_ids must be strings")
            return sorted(ids)

    async def verify_dob(self, customer_id: str, dob: dt.date) -> bool:
        return await self._match(self._customer(customer_id) + "/verify-dob", {"date_of_birth": dob.isoformat()})

    async def verify_card_last4(self, customer_id: str, last4: str) -> bool:
        return await self._match(self._customer(customer_id) + "/verify-card", {"last4": last4})

    async def send_otp(self, customer_id: str) -> bool:
        try:
            data = await self._request("POST", self._customer(customer_id) + "/otp")
        except NotFound:
            return False
        with _reading("one-time code answer"):
            return bool(typed(data, "sent", bool))

    async def verify_otp(self, customer_id: str, code: str) -> bool:
        return await self._match(self._customer(customer_id) + "/otp/verify", {"code": code})

    async def is_voice_locked(self, customer_id: str) -> bool:
        data = await self._request("GET", self._customer(customer_id) + "/voice-lock")
        with _reading("voice lock"):
            return bool(typed(data, "locked", bool))

    async def lock_voice_access(self, customer_id: str) -> None:
        await self._request("PUT", self._customer(customer_id) + "/voice-lock")

    # -- services: checked here first, and by the bank again --

    async def _service(
        self,
        principal: Principal,
        operation: Operation,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        authorize(principal, operation)
        url = self._customer(principal.customer_id) + path
        return await self._request(method, url, params=params, principal=principal, operation=operation)

    async def list_cards(self, principal: Principal) -> list[Card]:
        data = await self._service(principal, Operation.LIST_CARDS, "GET", "/cards")
        with _reading("card list"):
            return [_card(item) for item in _list(data, "cards")]

    async def card_delivery_status(self, principal: Principal) -> list[Shipment]:
        data = await self._service(principal, Operation.DELIVERY_STATUS, "GET", "/shipments")
        with _reading("shipments"):
            return [_shipment(item) for item in _list(data, "shipments")]

    async def _change_card(self, principal: Principal, card_id: str, operation: Operation) -> Card:
        path = f"/cards/{quote(card_id, safe='')}/{_CARD_ACTIONS[operation]}"
        data = await self._service(principal, operation, "POST", path)
        with _reading("card"):
            return _card(typed(data, "card", dict))

    async def block_card(self, principal: Principal, card_id: str) -> Card:
        return await self._change_card(principal, card_id, Operation.BLOCK_CARD)

    async def lock_card(self, principal: Principal, card_id: str) -> Card:
        return await self._change_card(principal, card_id, Operation.LOCK_CARD)

    async def unlock_card(self, principal: Principal, card_id: str) -> Card:
        return await self._change_card(principal, card_id, Operation.UNLOCK_CARD)

    async def activate_card(self, principal: Principal, card_id: str) -> Card:
        return await self._change_card(principal, card_id, Operation.ACTIVATE_CARD)

    async def balance(self, principal: Principal) -> Balance:
        data = await self._service(principal, Operation.BALANCE, "GET", "/balance")
        with _reading("balance"):
            return Balance(typed(data, "currency", str), _money(data, "balance"), _money(data, "available_credit"))

    async def last_transactions(self, principal: Principal, limit: int = 3) -> list[Transaction]:
        params = {"limit": str(max(1, limit))}
        data = await self._service(principal, Operation.TRANSACTIONS, "GET", "/transactions", params)
        with _reading("transactions"):
            return [_transaction(item) for item in _list(data, "transactions")]

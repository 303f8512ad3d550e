"""A local bank API server for the tests: the JSON HTTP API of banking/http_bank.py, served from the reference bank.

Every answer comes from a real `PgBank` on the test database, so a fact read through `HttpBank` can be
compared with the same fact read directly. Like a real bank it checks `X-Auth-Level` itself and answers
a repeated `Idempotency-Key` with its first answer without acting again. Faults are injected per
request (`fail_next`): an HTTP status, a stall longer than the client's timeout, or a body that is not
JSON. It listens on 127.0.0.1 only, on a free port.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from banking.backend import (
    AuthLevel,
    BankError,
    Card,
    InvalidCardState,
    NotAuthorized,
    NotFound,
    Principal,
    Shipment,
    Transaction,
)
from banking.pg_bank import PgBank

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STALL = "stall"  # a fault: answer only after the client has given up (use it on reads)
GARBAGE = "garbage"  # a fault: 200 with a body that is not JSON


def _card(card: Card) -> dict[str, Any]:
    return {"card_id": card.card_id, "last4": card.last4, "status": card.status.value}


def _date(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def _shipment(shipment: Shipment) -> dict[str, Any]:
    return {
        "card_last4": shipment.card_last4,
        "status": shipment.status.value,
        "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number,
        "shipped_on": _date(shipment.shipped_on),
        "expected_on": _date(shipment.expected_on),
        "delivered_on": _date(shipment.delivered_on),
        "undeliverable": shipment.undeliverable,
    }


def _transaction(transaction: Transaction) -> dict[str, Any]:
    return {
        "posted_on": transaction.posted_on.isoformat(),
        "amount": str(transaction.amount),
        "currency": transaction.currency,
        "merchant": transaction.merchant,
        "pending": transaction.pending,
    }


@dataclass
class Seen:
    method: str
    path: str
    idempotency_key: str | None
    auth_level: str | None


@dataclass
class BankApi:
    bank: PgBank
    stall_s: float = 1.0
    seen: list[Seen] = field(default_factory=list)
    faults: list[int | str] = field(default_factory=list)
    _answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    base_url: str = ""

    def fail_next(self, *faults: int | str) -> None:
        """The next requests fail, one fault each, in order: an HTTP status, `STALL` or `GARBAGE`."""
        self.faults.extend(faults)

    async def start(self) -> str:
        app = web.Application(middlewares=[self._faults_middleware, self._idempotency_middleware])
        customer = "/v1/customers/{customer_id}"
        app.router.add_get("/v1/customers", self._find)
        app.router.add_post(customer + "/verify-dob", self._verify_dob)
        app.router.add_post(customer + "/verify-card", self._verify_card)
        app.router.add_post(customer + "/otp", self._send_otp)
        app.router.add_post(customer + "/otp/verify", self._verify_otp)
        app.router.add_get(customer + "/voice-lock", self._voice_locked)
        app.router.add_put(customer + "/voice-lock", self._lock_voice)
        app.router.add_get(customer + "/cards", self._cards)
        app.router.add_get(customer + "/shipments", self._shipments)
        app.router.add_post(customer + "/cards/{card_id}/{action}", self._change_card)
        app.router.add_get(customer + "/balance", self._balance)
        app.router.add_get(customer + "/transactions", self._transactions)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- middlewares --

    @web.middleware
    async def _faults_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.seen.append(
            Seen(
                request.method,
                request.path,
                request.headers.get("Idempotency-Key"),
                request.headers.get("X-Auth-Level"),
            )
        )
        if self.faults:
            fault = self.faults.pop(0)
            if fault == STALL:
                await asyncio.sleep(self.stall_s)
            elif fault == GARBAGE:
                return web.Response(text="<html>proxy error</html>", content_type="application/json")
            else:
                return web.json_response({"error": "injected"}, status=int(fault))
        try:
            return await handler(request)
        except NotAuthorized:
            return web.json_response({"error": "not authorized"}, status=403)
        except NotFound:
            return web.json_response({"error": "not found"}, status=404)
        except InvalidCardState:
            return web.json_response({"error": "invalid card state"}, status=409)
        except BankError:
            return web.json_response({"error": "unavailable"}, status=503)

    @web.middleware
    async def _idempotency_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if request.method == "GET" or key is None:
            return await handler(request)
        if key in self._answers:
            status, body = self._answers[key]
            return web.Response(status=status, text=body, content_type="application/json")
        response = await handler(request)
        if isinstance(response, web.Response) and isinstance(response.text, str):
            self._answers[key] = (response.status, response.text)
        return response

    # -- handlers --

    @staticmethod
    def _principal(request: web.Request) -> Principal:
        level = request.headers.get("X-Auth-Level", "")
        if level not in ("0", "1"):
            raise web.HTTPBadRequest(text="missing X-Auth-Level")
        return Principal(request.match_info["customer_id"], AuthLevel(int(level)))

    async def _find(self, request: web.Request) -> web.Response:
        return web.json_response({"customer_ids": await self.bank.find_customers_by_ani(request.query["phone"])})

    async def _verify_dob(self, request: web.Request) -> web.Response:
        body = await request.json()
        dob = dt.date.fromisoformat(body["date_of_birth"])
        return web.json_response({"match": await self.bank.verify_dob(request.match_info["customer_id"], dob)})

    async def _verify_card(self, request: web.Request) -> web.Response:
        body = await request.json()
        match = await self.bank.verify_card_last4(request.match_info["customer_id"], body["last4"])
        return web.json_response({"match": match})

    async def _send_otp(self, request: web.Request) -> web.Response:
        return web.json_response({"sent": await self.bank.send_otp(request.match_info["customer_id"])})

    async def _verify_otp(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"match": await self.bank.verify_otp(request.match_info["customer_id"], body["code"])})

    async def _voice_locked(self, request: web.Request) -> web.Response:
        return web.json_response({"locked": await self.bank.is_voice_locked(request.match_info["customer_id"])})

    async def _lock_voice(self, request: web.Request) -> web.Response:
        await self.bank.lock_voice_access(request.match_info["customer_id"])
        return web.json_response({"locked": True})

    async def _cards(self, request: web.Request) -> web.Response:
        cards = await self.bank.list_cards(self._principal(request))
        return web.json_response({"cards": [_card(card) for card in cards]})

    async def _shipments(self, request: web.Request) -> web.Response:
        shipments = await self.bank.card_delivery_status(self._principal(request))
        return web.json_response({"shipments": [_shipment(shipment) for shipment in shipments]})

    async def _change_card(self, request: web.Request) -> web.Response:
        change = {
            "block": self.bank.block_card,
            "lock": self.bank.lock_card,
            "unlock": self.bank.unlock_card,
            "activate": self.bank.activate_card,
        }.get(request.match_info["action"])
        if change is None:
            raise web.HTTPNotFound()
        card = await change(self._principal(request), request.match_info["card_id"])
        return web.json_response({"card": _card(card)})

    async def _balance(self, request: web.Request) -> web.Response:
        balance = await self.bank.balance(self._principal(request))
        return web.json_response(
            {
                "currency": balance.currency,
                "balance": str(balance.balance),
                "available_credit": str(balance.available_credit),
            }
        )

    async def _transactions(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "3"))
        transactions = await self.bank.last_transactions(self._principal(request), limit)
        return web.json_response({"transactions": [_transaction(t) for t in transactions]})

"""Tests for banking.http_bank against a local HTTP server serving the reference bank (tests/banking/bank_api.py).

Facts read over HTTP are compared with the same facts read straight from PostgreSQL; faults (server
errors, stalls, garbage) are injected per request on the server side.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from banking import templates
from banking.backend import (
    AuthLevel,
    BackendUnavailable,
    BankError,
    CardStatus,
    InvalidCardState,
    NotAuthorized,
    NotFound,
    Principal,
)
from banking.context import MemoryContextStore
from banking.dialogue import CallInfo, Dialogue
from banking.fastpath import FastPathUnderstander
from banking.http_bank import HttpBank
from banking.pg_bank import PgBank
from engines.resilience import BreakerState, CircuitBreaker
from tests.banking.bank_api import GARBAGE, STALL, BankApi
from tests.banking.conftest import CapturedSms, RealCall

ALICE = Principal("C000001", AuthLevel.VERIFIED)
BRUNO = Principal("C000002", AuthLevel.VERIFIED)


def state_of(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # read afresh: a property changes between two reads


def no_wait(low: float, high: float) -> float:
    return 0.0  # the backoff is real but zero: the tests do not depend on timing


@pytest_asyncio.fixture
async def api(bank: PgBank) -> AsyncIterator[BankApi]:
    server = BankApi(bank)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def http_bank(api: BankApi) -> AsyncIterator[HttpBank]:
    client = HttpBank(api.base_url, timeout_s=2.0, jitter=no_wait)
    try:
        yield client
    finally:
        await client.close()


async def test_facts_over_http_are_the_reference_banks_own(http_bank: HttpBank, bank: PgBank) -> None:
    assert await http_bank.card_delivery_status(ALICE) == await bank.card_delivery_status(ALICE)
    assert await http_bank.balance(ALICE) == await bank.balance(ALICE)
    assert await http_bank.last_transactions(ALICE, 3) == await bank.last_transactions(ALICE, 3)
    assert await http_bank.list_cards(BRUNO) == await bank.list_cards(BRUNO)


async def test_identification_and_verification(http_bank: HttpBank, sms: CapturedSms) -> None:
    assert await http_bank.find_customers_by_ani("+1 202 555 0106") == ["C000006", "C000007"]
    assert await http_bank.find_customers_by_ani("not a number") == []
    assert await http_bank.verify_dob("C000001", dt.date(1980, 3, 5))
    assert not await http_bank.verify_dob("C000001", dt.date(1980, 5, 3))
    assert await http_bank.verify_card_last4("C000001", "1881")
    assert not await http_bank.verify_card_last4("C000001", "0000")
    assert not await http_bank.verify_dob("C999999", dt.date(1980, 3, 5))  # unknown: no match, no error
    assert await http_bank.send_otp("C000001")
    [(_, code)] = sms.sent
    assert await http_bank.verify_otp("C000001", code)
    assert not await http_bank.is_voice_locked("C000001")


async def test_secrets_travel_in_bodies_never_in_urls(http_bank: HttpBank, api: BankApi) -> None:
    await http_bank.verify_dob("C000001", dt.date(1980, 3, 5))
    await http_bank.verify_card_last4("C000001", "1881")
    urls = " ".join(seen.path for seen in api.seen)
    assert "1980" not in urls and "1881" not in urls


async def test_a_card_change_reaches_the_bank_and_states_are_checked(
    api: BankApi, http_bank: HttpBank, mutable_bank: PgBank
) -> None:
    locked = await http_bank.lock_card(BRUNO, "K0000021")
    assert locked.status is CardStatus.LOCKED
    assert {card.card_id: card.status for card in await mutable_bank.list_cards(BRUNO)}["K0000021"] == "locked"
    with pytest.raises(InvalidCardState):
        await http_bank.activate_card(BRUNO, "K0000021")  # 409: only an inactive card can be activated
    with pytest.raises(NotFound):
        await http_bank.block_card(BRUNO, "K0000011")  # 404: Alice's card, not Bruno's


async def test_an_unverified_principal_is_refused_before_any_request(http_bank: HttpBank, api: BankApi) -> None:
    with pytest.raises(NotAuthorized):
        await http_bank.balance(Principal("C000001", AuthLevel.ANI))
    assert api.seen == []


async def test_the_bank_checks_the_auth_level_itself(api: BankApi, http_bank: HttpBank) -> None:
    # A client that would not check first still gets nothing.
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{api.base_url}/v1/customers/C000001/balance", headers={"X-Auth-Level": "0"}) as response,
    ):
        assert response.status == 403
    await http_bank.balance(ALICE)
    assert api.seen[-1].auth_level == "1"
    api.fail_next(403, 400)
    with pytest.raises(NotAuthorized):
        await http_bank.balance(ALICE)
    with pytest.raises(BankError, match="HTTP 400") as refused:
        await http_bank.balance(ALICE)
    assert not isinstance(refused.value, BackendUnavailable)  # a refusal is not retried


async def test_server_errors_are_retried_and_a_write_keeps_its_idempotency_key(
    api: BankApi, http_bank: HttpBank, mutable_bank: PgBank
) -> None:
    api.fail_next(503, 502)
    card = await http_bank.block_card(BRUNO, "K0000021")
    assert card.status is CardStatus.BLOCKED
    attempts = [seen for seen in api.seen if seen.method == "POST"]
    assert len(attempts) == 3
    assert attempts[0].idempotency_key is not None
    assert len({seen.idempotency_key for seen in attempts}) == 1


async def test_a_repeated_write_is_answered_once_by_the_bank(
    api: BankApi, http_bank: HttpBank, sms: CapturedSms
) -> None:
    api.fail_next(500)
    assert await http_bank.send_otp("C000001")
    assert len(sms.sent) == 1  # the failed attempt never reached the bank; the retry sent one text


async def test_a_stalled_read_times_out_and_is_retried(api: BankApi) -> None:
    api.stall_s = 0.5
    client = HttpBank(api.base_url, timeout_s=0.1, retries=3, jitter=no_wait)
    try:
        api.fail_next(STALL)
        assert await client.find_customers_by_ani("+12025550101") == ["C000001"]
        assert len(api.seen) == 2
    finally:
        await client.close()


async def test_after_every_retry_failed_the_bank_is_unavailable(api: BankApi, http_bank: HttpBank) -> None:
    api.fail_next(503, 503, 503, 503)
    with pytest.raises(BackendUnavailable, match="HTTP 503"):
        await http_bank.balance(ALICE)
    assert len(api.seen) == 4  # one attempt and three retries


async def test_a_body_that_is_not_json_is_a_failure_not_a_crash(api: BankApi, http_bank: HttpBank) -> None:
    api.fail_next(GARBAGE)
    assert await http_bank.balance(ALICE) == await api.bank.balance(ALICE)  # retried
    api.fail_next(GARBAGE, GARBAGE, GARBAGE, GARBAGE)
    with pytest.raises(BackendUnavailable, match="invalid JSON"):
        await http_bank.balance(ALICE)


async def test_a_refused_connection_is_unavailable(closed_port: int) -> None:
    client = HttpBank(f"http://127.0.0.1:{closed_port}", retries=1, jitter=no_wait)
    try:
        with pytest.raises(BackendUnavailable):
            await client.find_customers_by_ani("+12025550101")
    finally:
        await client.close()


async def test_the_circuit_opens_after_five_failures_and_a_trial_closes_it(api: BankApi) -> None:
    now = [0.0]
    breaker = CircuitBreaker(clock=lambda: now[0], name="bank-api")
    client = HttpBank(api.base_url, retries=3, breaker=breaker, jitter=no_wait)
    try:
        api.fail_next(*[503] * 5)
        with pytest.raises(BackendUnavailable):
            await client.balance(ALICE)  # four attempts fail
        with pytest.raises(BackendUnavailable):
            await client.balance(ALICE)  # the fifth failure opens the circuit; no retry follows
        assert breaker.state is BreakerState.OPEN and len(api.seen) == 5
        began = time.monotonic()
        with pytest.raises(BackendUnavailable, match="circuit open"):
            await client.balance(ALICE)
        assert len(api.seen) == 5 and time.monotonic() - began < 1.0  # refused without a request
        now[0] += 30
        assert await client.balance(ALICE) == await api.bank.balance(ALICE)  # the trial
        assert state_of(breaker) is BreakerState.CLOSED
    finally:
        await client.close()


async def test_a_whole_call_runs_over_the_http_bank(
    http_bank: HttpBank, pool: asyncpg.Pool, real_call: RealCall
) -> None:
    dialogue = Dialogue(
        CallInfo(real_call.call_id, "+12025550101", real_call.b2b_key),
        http_bank,
        FastPathUnderstander(),
        MemoryContextStore(),
        today=lambda: dt.date(2026, 11, 21),
    )
    await dialogue.start()
    assert (await dialogue.handle_text("where is my card")).say == templates.ASK_DOB
    await dialogue.handle_text("March 5th, 1980")
    reply = await dialogue.handle_digits("1881")
    assert reply.say.startswith(templates.VERIFIED)
    assert templates.spell("1Z999AA10123456784") in reply.say


async def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        HttpBank("http://127.0.0.1:1", timeout_s=0)

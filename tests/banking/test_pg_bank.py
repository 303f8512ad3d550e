"""Tests for banking.pg_bank (and the policy in banking.backend) against the real reference bank."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import asyncpg
import pytest

from banking.backend import (
    REQUIRED_LEVEL,
    AuthLevel,
    BackendUnavailable,
    Card,
    CardStatus,
    InvalidCardState,
    NotAuthorized,
    NotFound,
    Operation,
    Principal,
    ShipmentStatus,
    normalize_phone,
)
from banking.pg_bank import OTP_MAX_ATTEMPTS, PgBank
from tests.banking.conftest import CapturedSms

ALICE = "C000001"
BRUNO = "C000002"
ALICE_DOB = dt.date(1980, 3, 5)
VERIFIED_ALICE = Principal(ALICE, AuthLevel.VERIFIED)
VERIFIED_BRUNO = Principal(BRUNO, AuthLevel.VERIFIED)


@pytest.mark.parametrize(
    ("number", "e164"),
    [
        ("+12025550101", "+12025550101"),
        ("+1 (202) 555-0101", "+12025550101"),
        ("12025550101", "+12025550101"),
        ("2025550101", "+12025550101"),
        ("0012025550101", "+12025550101"),
        ("+442071838750", "+442071838750"),
        ("anonymous", None),
        ("caller", None),
        ("", None),
        ("+0123", None),
    ],
)
def test_calling_numbers_are_normalised_to_e164(number: str, e164: str | None) -> None:
    assert normalize_phone(number) == e164


async def test_customers_are_found_by_any_form_of_their_number(bank: PgBank) -> None:
    assert await bank.find_customers_by_ani("+12025550101") == [ALICE]
    assert await bank.find_customers_by_ani("(202) 555-0193") == [ALICE]  # her work phone
    assert await bank.find_customers_by_ani("+12025550106") == ["C000006", "C000007"]  # shared home phone
    assert await bank.find_customers_by_ani("+12025550199") == []
    assert await bank.find_customers_by_ani("caller") == []  # the SIPp capture's From user: not a number


async def test_date_of_birth_is_verified_exactly(bank: PgBank) -> None:
    assert await bank.verify_dob(ALICE, ALICE_DOB)
    assert not await bank.verify_dob(ALICE, dt.date(1980, 5, 3))
    assert not await bank.verify_dob("C999999", ALICE_DOB)


async def test_card_ending_is_verified_only_for_cards_that_are_not_blocked(bank: PgBank) -> None:
    assert await bank.verify_card_last4(ALICE, "1881")
    assert await bank.verify_card_last4(ALICE, "7315")  # the new, not yet active card
    assert not await bank.verify_card_last4(ALICE, "5100")  # Bruno's
    assert await bank.verify_card_last4("C000003", "8844")
    assert not await bank.verify_card_last4("C000003", "0005")  # lost and blocked: may be in a thief's hands
    for malformed in ("188", "18811", "abcd", "\uff11\uff18\uff18\uff11", ""):
        assert not await bank.verify_card_last4(ALICE, malformed)


async def test_one_time_code_is_sent_to_the_mobile_and_verified_once(bank: PgBank, sms: CapturedSms) -> None:
    assert await bank.send_otp(ALICE)
    [(phone, code)] = sms.sent
    assert phone == "+12025550101" and len(code) == 6 and code.isdigit()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert not await bank.verify_otp(ALICE, wrong)
    assert await bank.verify_otp(ALICE, code)
    assert not await bank.verify_otp(ALICE, code)  # used up


async def test_one_time_code_allows_limited_attempts(bank: PgBank, sms: CapturedSms) -> None:
    await bank.send_otp(ALICE)
    code = sms.sent[-1][1]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(OTP_MAX_ATTEMPTS):
        assert not await bank.verify_otp(ALICE, wrong)
    assert not await bank.verify_otp(ALICE, code)  # the right code is too late now


async def test_a_new_code_replaces_the_previous_one(bank: PgBank, sms: CapturedSms) -> None:
    await bank.send_otp(ALICE)
    await bank.send_otp(ALICE)
    first, second = sms.sent[0][1], sms.sent[1][1]
    if first != second:
        assert not await bank.verify_otp(ALICE, first)
    assert await bank.verify_otp(ALICE, second)


async def test_an_expired_code_never_verifies(pool: asyncpg.Pool, sms: CapturedSms) -> None:
    expired = PgBank(pool, otp_sender=sms, otp_ttl=dt.timedelta(seconds=-1))
    assert await expired.send_otp(ALICE)
    assert not await expired.verify_otp(ALICE, sms.sent[-1][1])


async def test_no_code_is_sent_without_a_mobile_on_file(bank: PgBank, sms: CapturedSms) -> None:
    assert not await bank.send_otp("C000005")  # no phone at all
    assert not await bank.send_otp("C000006")  # only a shared home phone
    assert sms.sent == []


async def test_voice_lock_makes_every_verification_fail(mutable_bank: PgBank, sms: CapturedSms) -> None:
    assert not await mutable_bank.is_voice_locked(ALICE)
    await mutable_bank.lock_voice_access(ALICE)
    assert await mutable_bank.is_voice_locked(ALICE)
    assert not await mutable_bank.verify_dob(ALICE, ALICE_DOB)
    assert not await mutable_bank.verify_card_last4(ALICE, "1881")
    assert not await mutable_bank.send_otp(ALICE)
    assert sms.sent == []


def test_every_service_needs_a_verified_caller() -> None:
    assert set(REQUIRED_LEVEL) == set(Operation)
    assert all(level is AuthLevel.VERIFIED for level in REQUIRED_LEVEL.values())


async def test_services_refuse_a_caller_identified_only_by_phone(bank: PgBank) -> None:
    ani_only = Principal(ALICE, AuthLevel.ANI)
    attempts = [
        bank.list_cards(ani_only),
        bank.card_delivery_status(ani_only),
        bank.balance(ani_only),
        bank.last_transactions(ani_only),
        bank.block_card(ani_only, "K0000011"),
        bank.lock_card(ani_only, "K0000011"),
        bank.unlock_card(ani_only, "K0000011"),
        bank.activate_card(ani_only, "K0000012"),
    ]
    for attempt in attempts:
        with pytest.raises(NotAuthorized):
            await attempt
    assert [card.status for card in await bank.list_cards(VERIFIED_ALICE)] == [CardStatus.ACTIVE, CardStatus.INACTIVE]


async def test_a_card_of_another_customer_is_not_found(bank: PgBank) -> None:
    with pytest.raises(NotFound):
        await bank.lock_card(VERIFIED_BRUNO, "K0000011")  # Alice's card
    with pytest.raises(NotFound):
        await bank.block_card(VERIFIED_ALICE, "K9999999")
    assert await bank.list_cards(VERIFIED_ALICE) == [
        Card("K0000011", "1881", CardStatus.ACTIVE),
        Card("K0000012", "7315", CardStatus.INACTIVE),
    ]


async def test_card_changes_follow_the_allowed_transitions(mutable_bank: PgBank) -> None:
    bank = mutable_bank
    assert await bank.unlock_card(VERIFIED_BRUNO, "K0000022") == Card("K0000022", "6011", CardStatus.ACTIVE)
    assert await bank.lock_card(VERIFIED_BRUNO, "K0000021") == Card("K0000021", "5100", CardStatus.LOCKED)
    assert await bank.activate_card(VERIFIED_BRUNO, "K0000023") == Card("K0000023", "3782", CardStatus.ACTIVE)
    assert await bank.block_card(VERIFIED_BRUNO, "K0000021") == Card("K0000021", "5100", CardStatus.BLOCKED)
    with pytest.raises(InvalidCardState):
        await bank.unlock_card(VERIFIED_BRUNO, "K0000021")  # blocked is final
    with pytest.raises(InvalidCardState):
        await bank.activate_card(VERIFIED_BRUNO, "K0000022")  # already active
    with pytest.raises(InvalidCardState):
        await bank.block_card(VERIFIED_BRUNO, "K0000021")


async def test_delivery_status_is_the_latest_shipment_of_each_card_newest_first(bank: PgBank) -> None:
    shipments = await bank.card_delivery_status(VERIFIED_ALICE)
    assert [(s.card_last4, s.status) for s in shipments] == [
        ("7315", ShipmentStatus.IN_TRANSIT),
        ("1881", ShipmentStatus.DELIVERED),
    ]
    new_card = shipments[0]
    assert (new_card.carrier, new_card.tracking_number) == ("UPS", "1Z999AA10123456784")
    assert new_card.expected_on == dt.date(2026, 11, 24)
    [returned] = await bank.card_delivery_status(Principal("C000004", AuthLevel.VERIFIED))
    assert returned.undeliverable and returned.status is ShipmentStatus.RETURNED


async def test_balance_and_transactions_come_from_the_account(bank: PgBank, pool: asyncpg.Pool) -> None:
    balance = await bank.balance(VERIFIED_ALICE)
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT balance, available_credit FROM bank.accounts WHERE customer_id = $1", ALICE)
    assert (balance.currency, balance.balance, balance.available_credit) == ("USD", row[0], row[1])
    assert isinstance(balance.balance, Decimal)
    transactions = await bank.last_transactions(VERIFIED_ALICE, 3)
    assert len(transactions) == 3
    assert [t.posted_on for t in transactions] == sorted((t.posted_on for t in transactions), reverse=True)
    assert transactions[0].pending
    assert len(await bank.last_transactions(VERIFIED_ALICE, 1000)) == 5  # clamped, and Alice has five
    assert len(await bank.last_transactions(VERIFIED_ALICE, 0)) == 1


async def test_an_unreachable_database_raises_backend_unavailable(pg_dsn: str) -> None:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1)
    await pool.close()
    bank = PgBank(pool)
    with pytest.raises(BackendUnavailable):
        await bank.find_customers_by_ani("+12025550101")
    with pytest.raises(BackendUnavailable):
        await bank.balance(VERIFIED_ALICE)

"""Tests for sql/0004_reference_bank_seed.sql: size, determinism and the edge cases other tests rely on."""

from __future__ import annotations

import datetime as dt

import asyncpg

from banking.migrate import SQL_DIR


async def test_seed_has_at_least_fifty_customers_each_with_an_account(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        customers = await conn.fetchval("SELECT count(*) FROM bank.customers")
        without_account = await conn.fetchval(
            "SELECT count(*) FROM bank.customers c WHERE NOT EXISTS "
            "(SELECT 1 FROM bank.accounts a WHERE a.customer_id = c.customer_id)"
        )
    assert customers >= 50
    assert without_account == 0


async def test_seed_is_deterministic_and_running_it_again_adds_nothing(pool: asyncpg.Pool) -> None:
    snapshot = (
        "SELECT md5(string_agg(c.customer_id || c.given_name || c.date_of_birth || k.card_id || k.last4 || k.status,"
        " ',' ORDER BY k.card_id)) FROM bank.customers c JOIN bank.cards k USING (customer_id)"
    )
    async with pool.acquire() as conn:
        before = await conn.fetchval(snapshot)
        await conn.execute((SQL_DIR / "0004_reference_bank_seed.sql").read_text(encoding="utf-8"))
        after = await conn.fetchval(snapshot)
        alice = await conn.fetchrow(
            "SELECT given_name, date_of_birth FROM bank.customers WHERE customer_id = 'C000001'"
        )
        generated = await conn.fetchrow(
            "SELECT given_name, date_of_birth FROM bank.customers WHERE customer_id = 'C000042'"
        )
    assert before == after
    assert (alice["given_name"], alice["date_of_birth"]) == ("Alice", dt.date(1980, 3, 5))
    # Generated rows follow their formula, so every fresh database holds the same people.
    assert generated["date_of_birth"] == dt.date(1950, 1, 1) + dt.timedelta(days=(42 * 3571) % 18250)


async def test_seed_edge_cases_are_present(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        several_cards = await conn.fetch(
            "SELECT last4, status FROM bank.cards WHERE customer_id = 'C000002' ORDER BY card_id"
        )
        blocked = await conn.fetchval("SELECT count(*) FROM bank.cards WHERE status = 'blocked'")
        undeliverable = await conn.fetchrow(
            "SELECT c.customer_id, s.status, s.carrier FROM bank.card_shipments s JOIN bank.cards c USING (card_id) "
            "WHERE s.undeliverable"
        )
        no_phone = await conn.fetch(
            "SELECT customer_id FROM bank.customers c WHERE NOT EXISTS "
            "(SELECT 1 FROM bank.phones p WHERE p.customer_id = c.customer_id)"
        )
        shared = await conn.fetch(
            "SELECT e164, array_agg(customer_id ORDER BY customer_id) AS customers FROM bank.phones "
            "GROUP BY e164 HAVING count(*) > 1 ORDER BY e164"
        )
        preparing = await conn.fetchrow(
            "SELECT carrier, tracking_number FROM bank.card_shipments WHERE status = 'preparing'"
        )
    assert [(row["last4"], row["status"]) for row in several_cards] == [
        ("5100", "active"),
        ("6011", "locked"),
        ("3782", "inactive"),
    ]
    assert blocked >= 1
    assert (undeliverable["customer_id"], undeliverable["status"], undeliverable["carrier"]) == (
        "C000004",
        "returned",
        "UPS",
    )
    assert [row["customer_id"] for row in no_phone] == ["C000005"]
    assert [(row["e164"], row["customers"]) for row in shared] == [
        ("+12025550106", ["C000006", "C000007"]),
        ("+12025550109", ["C000009", "C000010"]),
    ]
    assert (preparing["carrier"], preparing["tracking_number"]) == (None, None)


async def test_the_reference_bank_holds_no_full_card_number(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        columns = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'bank'"
        )
        long_digit_runs = await conn.fetchval(
            "SELECT count(*) FROM bank.cards WHERE pan_token ~ '[0-9]{13,}' OR last4 !~ '^[0-9]{4}$'"
        )
    assert not [row for row in columns if "pan" in row["column_name"] and row["column_name"] != "pan_token"]
    assert long_digit_runs == 0

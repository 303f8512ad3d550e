"""Shared fixtures for the banking tests: the REAL PostgreSQL and Redis of this machine, isolated per run.

Each test session creates its own database `avc_test_<random>` (migrated with the project's sql/ files,
so the reference bank is seeded) and drops it at the end; Redis keys live under a random prefix that is
deleted afterwards. Runs in parallel therefore never see each other's data. A server that cannot be
reached FAILS the tests with what to start: silently skipping them would hide that nothing was tested.

Tests that change the reference bank (block a card, lock voice access) use `mutable_bank`, which
restores the seed after the test by truncating the bank's tables and running the seed file again.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from banking.migrate import SQL_DIR, migrate
from banking.pg_bank import PgBank
from banking.understanding import Semantic, load_semantic
from tests.engines.installed import installed_manifest
from tests.support.captures import events

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
SEED_SQL = SQL_DIR / "0004_reference_bank_seed.sql"
_BANK_TABLES = (
    "bank.otp_challenges, bank.transactions, bank.card_shipments, bank.cards, bank.accounts, bank.phones, "
    "bank.customers"
)


def _database_dsn(admin_dsn: str, database: str) -> str:
    parts = urlsplit(admin_dsn)
    return urlunsplit(parts._replace(path="/" + database))


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """DSN of a fresh, migrated and seeded database that lives for this test session."""
    database = f"avc_test_{secrets.token_hex(6)}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_DSN} ({type(exc).__name__}: {exc}). These tests need a real "
            "server: start PostgreSQL on 127.0.0.1:5432 with trust auth for user postgres and a database `test` "
            "(e.g. `service postgresql start`).",
            pytrace=False,
        )
    dsn = _database_dsn(ADMIN_DSN, database)
    try:
        asyncio.run(migrate(dsn))
        yield dsn
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@pytest_asyncio.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@dataclass
class CapturedSms:
    """An `OtpSender` that keeps what it would have texted, so a test can type the code like a customer."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, phone_e164: str, code: str) -> None:
        self.sent.append((phone_e164, code))


@pytest.fixture
def sms() -> CapturedSms:
    return CapturedSms()


@pytest.fixture
def bank(pool: asyncpg.Pool, sms: CapturedSms) -> PgBank:
    return PgBank(pool, otp_sender=sms)


@pytest_asyncio.fixture
async def mutable_bank(pool: asyncpg.Pool, bank: PgBank) -> AsyncIterator[PgBank]:
    """The reference bank, restored to its seed after the test changed it."""
    try:
        yield bank
    finally:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"TRUNCATE {_BANK_TABLES} CASCADE")
            await conn.execute(SEED_SQL.read_text(encoding="utf-8"))


@pytest_asyncio.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__}: {exc}). These tests need a real server: "
            "start redis-server on 127.0.0.1:6379 (e.g. `service redis-server start`).",
            pytrace=False,
        )
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def redis_prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    """A key prefix no other run uses; its keys are deleted after the test."""
    prefix = f"avc-test-{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        keys = [key async for key in redis_client.scan_iter(match=prefix + "*")]
        if keys:
            await redis_client.delete(*keys)


@pytest.fixture
def closed_port() -> int:
    """A loopback TCP port with nothing listening: connecting to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass(frozen=True)
class RealCall:
    """Identity of a real call, read from OpenSIPS 3.5.9's NEW event in capture 02 (byte for byte)."""

    call_id: str
    b2b_key: str


@pytest.fixture(scope="session")
def real_call() -> RealCall:
    params = events("02")[0].json["params"]
    assert params["event_type"] == "NEW"
    match = re.search(r"^Call-ID:\s*(\S+)\r$", params["headers"], re.MULTILINE)
    assert match is not None, "capture 02 has no Call-ID header"
    return RealCall(call_id=match.group(1), b2b_key=params["key"])


@pytest.fixture(scope="session")
def semantic() -> Iterator[Semantic]:
    """The semantic understander over the shipped content, in an in-memory Qdrant (built once per test run)."""
    loaded = load_semantic(installed_manifest())
    yield loaded
    loaded.close()

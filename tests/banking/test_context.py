"""Tests for banking.context: the per-call context, in real Redis with a TTL, and life without Redis."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
import redis.asyncio as aioredis

from banking.backend import AuthLevel
from banking.context import (
    CallContext,
    ContextError,
    DialogueState,
    MemoryContextStore,
    RedisContextStore,
    check_call_id,
)
from banking.intents import Intent
from tests.banking.conftest import RealCall


def sample(call_id: str) -> CallContext:
    return CallContext(
        call_id=call_id,
        state=DialogueState.AUTH_FACTOR,
        candidates=["C000006", "C000007"],
        dob_matches=["C000007"],
        level=AuthLevel.ANI,
        failures=2,
        misunderstood=1,
        silences=1,
        pending_intent=Intent.BALANCE,
        intents=["balance"],
        seq=7,
        last_say="Your current balance is 79 dollars and 19 cents.",
    )


def test_context_survives_a_json_round_trip_except_what_the_bot_said(real_call: RealCall) -> None:
    context = sample(real_call.call_id)
    restored = CallContext.from_json(context.to_json())
    assert restored.last_say == ""  # may hold a balance: kept in memory only
    restored.last_say = context.last_say
    assert restored == context


def test_stored_context_holds_no_date_of_birth_or_spoken_fact(real_call: RealCall) -> None:
    stored = json.loads(sample(real_call.call_id).to_json())
    assert "last_say" not in stored
    assert "dollars" not in json.dumps(stored)


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[]",
        '{"v": 99}',
        '{"v": 1, "call_id": "x"}',
        json.dumps({**json.loads(CallContext(call_id="x").to_json()), "state": "hacked"}),
        json.dumps({**json.loads(CallContext(call_id="x").to_json()), "failures": "0"}),
        json.dumps({**json.loads(CallContext(call_id="x").to_json()), "failures": True}),
        json.dumps({**json.loads(CallContext(call_id="x").to_json()), "candidates": [1]}),
        json.dumps({**json.loads(CallContext(call_id="x").to_json()), "level": 7}),
    ],
)
def test_an_unreadable_stored_context_raises_context_error(data: str) -> None:
    with pytest.raises(ContextError):
        CallContext.from_json(data)


@pytest.mark.parametrize("call_id", ["", "x" * 257, "abc\r\nInjected: 1"])
def test_call_ids_that_cannot_key_a_context_are_refused(call_id: str) -> None:
    with pytest.raises(ValueError, match="unusable Call-ID"):
        check_call_id(call_id)


async def test_redis_store_saves_loads_and_deletes(
    redis_client: aioredis.Redis, redis_prefix: str, real_call: RealCall
) -> None:
    store = RedisContextStore(redis_client, prefix=redis_prefix)
    context = sample(real_call.call_id)
    assert await store.load(real_call.call_id) is None
    await store.save(context)
    loaded = await store.load(real_call.call_id)
    assert loaded is not None and loaded.level is AuthLevel.ANI and loaded.failures == 2
    assert await redis_client.exists(redis_prefix + real_call.call_id) == 1
    await store.delete(real_call.call_id)
    assert await store.load(real_call.call_id) is None


async def test_every_save_sets_the_ttl(redis_client: aioredis.Redis, redis_prefix: str, real_call: RealCall) -> None:
    store = RedisContextStore(redis_client, ttl=dt.timedelta(minutes=5), prefix=redis_prefix)
    await store.save(sample(real_call.call_id))
    ttl = await redis_client.ttl(redis_prefix + real_call.call_id)
    assert 0 < ttl <= 300
    await redis_client.persist(redis_prefix + real_call.call_id)
    await store.save(sample(real_call.call_id))
    assert 0 < await redis_client.ttl(redis_prefix + real_call.call_id) <= 300


def test_a_ttl_under_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="TTL"):
        RedisContextStore(aioredis.Redis(), ttl=dt.timedelta(milliseconds=10))


async def test_a_corrupted_stored_context_is_discarded_and_logged(
    redis_client: aioredis.Redis, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisContextStore(redis_client, prefix=redis_prefix)
    await redis_client.set(redis_prefix + "call-1", b"\xff garbage")
    with caplog.at_level(logging.ERROR, logger="banking.context"):
        assert await store.load("call-1") is None
    assert "discarding the stored context" in caplog.text


async def test_when_redis_is_down_the_store_degrades_and_logs_once(
    closed_port: int, caplog: pytest.LogCaptureFixture, real_call: RealCall
) -> None:
    store = RedisContextStore.from_url(f"redis://127.0.0.1:{closed_port}/0")
    try:
        with caplog.at_level(logging.WARNING, logger="banking.context"):
            await store.save(sample(real_call.call_id))
            assert await store.load(real_call.call_id) is None
            await store.delete(real_call.call_id)
    finally:
        await store.close()
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "calls go on from memory" in warnings[0].getMessage()


async def test_memory_store_keeps_contexts_per_call() -> None:
    store = MemoryContextStore()
    await store.save(sample("a"))
    assert (await store.load("a")) is not None
    assert await store.load("b") is None
    await store.delete("a")
    assert await store.load("a") is None

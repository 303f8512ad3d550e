"""Tests for banking.journal: the call record in the real PostgreSQL, always redacted."""

from __future__ import annotations

import json
import logging
import uuid

import asyncpg
import pytest

from banking.backend import AuthLevel
from banking.journal import (
    ABANDONED_OUTCOME,
    AuditEntry,
    PgJournal,
    SessionEnd,
    SessionStart,
    Speaker,
    bot_turn,
    caller_turn,
    close_abandoned,
    keypad_turn,
)
from banking.redact import ANSWER_MASK, DATE_MASK, DIGITS_MASK, PAN_MASK
from tests.banking.conftest import RealCall


def test_caller_turns_are_redacted_before_they_exist() -> None:
    turn = caller_turn(3, "my card is 4111 1111 1111 1111, born March 5th, 1980", secret=False)
    assert turn.text == f"my card is {PAN_MASK}, born {DATE_MASK}"
    assert turn.speaker is Speaker.CALLER and turn.seq == 3


def test_answers_given_while_a_secret_was_asked_lose_every_digit() -> None:
    assert caller_turn(0, "it's one eight eight one", secret=True).text == f"it's {DIGITS_MASK}"
    # Where a date of birth was asked, nothing of the answer stays, even what no redactor recognises as a date.
    assert caller_turn(0, "March the, uh, fifth", secret=False, withheld=True).text == ANSWER_MASK
    assert caller_turn(0, "  ", secret=False, withheld=True).text == "  "  # silence stays silence


def test_keypad_turns_record_only_how_many_keys() -> None:
    assert keypad_turn(0, "1881").text == "[keypad: 4 keys]"


def test_bot_turns_keep_their_dates() -> None:
    text = "It's expected to arrive by November 24, 2026."
    assert bot_turn(0, text).text == text


def test_session_start_keeps_only_the_last_four_digits_of_the_ani() -> None:
    assert SessionStart(str(uuid.uuid4()), "c", None, "+1 202 555 0101").ani_last4 == "0101"
    assert SessionStart(str(uuid.uuid4()), "c", None, "anonymous").ani_last4 is None
    assert SessionStart(str(uuid.uuid4()), "c", None, None).ani_last4 is None


async def test_pg_journal_writes_a_whole_call(pool: asyncpg.Pool, real_call: RealCall) -> None:
    journal = PgJournal(pool)
    session_id = str(uuid.uuid4())
    await journal.open(SessionStart(session_id, real_call.call_id, real_call.b2b_key, "+12025550101"))
    await journal.turn(session_id, caller_turn(0, "my pin is 1234", secret=False, timings={"asr_ms": 412.5}))
    await journal.turn(session_id, bot_turn(1, "Sorry, I didn't get that."))
    await journal.audit(session_id, AuditEntry("balance", AuthLevel.VERIFIED, "ok", {"count": "1"}))
    await journal.close(session_id, SessionEnd("completed", AuthLevel.VERIFIED, "balance", {"turns": 2}))
    await journal.close(session_id, SessionEnd("overwritten?", None, None, {}))  # a second end changes nothing
    async with pool.acquire() as conn:
        session = await conn.fetchrow("SELECT * FROM call_sessions WHERE id = $1", uuid.UUID(session_id))
        turns = await conn.fetch(
            "SELECT seq, speaker, text, timings FROM conversation_turns WHERE session_id = $1 ORDER BY seq",
            uuid.UUID(session_id),
        )
        audit = await conn.fetchrow("SELECT * FROM banking_transactions WHERE session_id = $1", uuid.UUID(session_id))
    assert (session["call_id"], session["b2b_key"], session["ani_last4"]) == (
        real_call.call_id,
        real_call.b2b_key,
        "0101",
    )
    assert (session["outcome"], session["auth_level"], session["intent"]) == ("completed", 1, "balance")
    assert session["ended_at"] >= session["started_at"]
    assert json.loads(session["record"]) == {"turns": 2}
    assert [(t["seq"], t["speaker"], t["text"]) for t in turns] == [
        (0, "caller", "my pin is [secret]"),
        (1, "bot", "Sorry, I didn't get that."),
    ]
    assert json.loads(turns[0]["timings"]) == {"asr_ms": 412.5}
    assert (audit["operation"], audit["auth_level"], audit["outcome"]) == ("balance", 1, "ok")


async def test_a_storage_failure_is_logged_and_never_raised(pg_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1)
    await pool.close()
    journal = PgJournal(pool)
    session_id = str(uuid.uuid4())
    with caplog.at_level(logging.ERROR, logger="banking.journal"):
        await journal.open(SessionStart(session_id, "call", None, None))
        await journal.turn(session_id, bot_turn(0, "Hello."))
    assert "session start not written" in caplog.text
    assert "turn not written" in caplog.text


async def test_rows_a_lost_connector_left_open_are_closed_at_its_start_and_no_others(
    pool: asyncpg.Pool, real_call: RealCall
) -> None:
    crashed, live, ended = PgJournal(pool, node="avc-a"), PgJournal(pool, node="avc-b"), PgJournal(pool, node="avc-a")
    ids = {name: str(uuid.uuid4()) for name in ("crashed", "live", "ended", "ancient")}
    for name, journal in (("crashed", crashed), ("live", live), ("ended", ended), ("ancient", live)):
        await journal.open(SessionStart(ids[name], real_call.call_id, real_call.b2b_key, None))
    await ended.close(ids["ended"], SessionEnd("goodbye", None, None, {}))
    # Another node's row open for longer than any call may last: that node is gone too.
    await pool.execute(
        "UPDATE call_sessions SET started_at = now() - interval '2 hours' WHERE id = $1", uuid.UUID(ids["ancient"])
    )

    assert await close_abandoned(pool, "avc-a", older_than_s=3600) == 2

    rows = {
        str(r["id"]): (r["node"], r["outcome"], r["ended_at"] is not None)
        for r in await pool.fetch(
            "SELECT id, node, outcome, ended_at FROM call_sessions WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids.values()],
        )
    }
    assert rows[ids["crashed"]] == ("avc-a", ABANDONED_OUTCOME, True)
    assert rows[ids["ancient"]] == ("avc-b", ABANDONED_OUTCOME, True)
    assert rows[ids["live"]] == ("avc-b", None, False)  # another node's live call is not touched
    assert rows[ids["ended"]] == ("avc-a", "goodbye", True)
    assert await close_abandoned(pool, "avc-a", older_than_s=3600) == 0

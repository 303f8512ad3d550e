"""Tests for banking.durable_journal and banking.spool: call records survive PostgreSQL outages, in order, once.

Outages are real: the test database loses a table (renamed away and back), or PostgreSQL becomes
unreachable behind a loopback TCP proxy that the test cuts and restores.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from banking.backend import AuthLevel
from banking.context import MemoryContextStore
from banking.dialogue import CallInfo, Dialogue
from banking.durable_journal import DurableJournal
from banking.fastpath import FastPathUnderstander
from banking.journal import (
    AuditEntry,
    Journal,
    JournalRecord,
    PgJournal,
    SessionEnd,
    SessionStart,
    audit_record,
    bot_turn,
    caller_turn,
    close_record,
    open_record,
    turn_record,
)
from banking.pg_bank import PgBank
from banking.spool import PENDING, Spool, SpoolLocked
from tests.banking.conftest import RealCall
from tests.banking.tcp_proxy import TcpProxy

FAST_RETRY_S = 0.05
POLL_S = 0.02
WAIT_S = 10.0  # an upper bound for a local database to take the spool back; never reached when all is well


class RecordingWriter:
    """The real `PgJournal`, noting which records it managed to write, in the order it wrote them."""

    def __init__(self, journal: PgJournal) -> None:
        self._journal = journal
        self.written: list[str] = []

    async def write(self, record: JournalRecord) -> None:
        await self._journal.write(record)
        self.written.append(record.id)


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll `condition` until it holds; the bound only guards against a hang."""
    for _ in range(round(WAIT_S / POLL_S)):
        if await condition():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"still not true after {WAIT_S} s")


async def drained(journal: DurableJournal) -> bool:
    return journal.depth == 0


@pytest_asyncio.fixture
async def proxy(pg_dsn: str) -> AsyncIterator[TcpProxy]:
    port = urlsplit(pg_dsn).port or 5432
    tcp = TcpProxy(port)
    await tcp.start()
    try:
        yield tcp
    finally:
        await tcp.cut()


@pytest_asyncio.fixture
async def proxied_pool(pg_dsn: str, proxy: TcpProxy) -> AsyncIterator[asyncpg.Pool]:
    parts = urlsplit(pg_dsn)
    dsn = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=2, max_inactive_connection_lifetime=0)
    try:
        yield pool
    finally:
        pool.terminate()


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


async def write_call(journal: Journal, session_id: str, turns: int) -> int:
    """The writes of one call: start, `turns` turns with an audit entry after the first, end. Returns how many."""
    await journal.open(SessionStart(session_id, f"call-{session_id[:8]}", None, "+12025550101"))
    for seq in range(turns):
        if seq % 2:
            await journal.turn(session_id, caller_turn(seq, f"turn {seq}, my pin is 4321", secret=False))
        else:
            await journal.turn(session_id, bot_turn(seq, f"turn {seq}"))
        if seq == 0:
            await journal.audit(session_id, AuditEntry("balance", AuthLevel.VERIFIED, "ok", {"count": "1"}))
    await journal.close(session_id, SessionEnd("completed", AuthLevel.VERIFIED, "balance", {"turns": turns}))
    return turns + 3


async def stored(pool: asyncpg.Pool, session_id: str) -> tuple[asyncpg.Record | None, list[int], int]:
    async with pool.acquire() as conn:
        session = await conn.fetchrow("SELECT * FROM call_sessions WHERE id = $1", uuid.UUID(session_id))
        # xmin orders rows by the transaction that wrote them: the order the records reached the database.
        seqs = await conn.fetch(
            "SELECT seq FROM conversation_turns WHERE session_id = $1 ORDER BY xmin::text::bigint",
            uuid.UUID(session_id),
        )
        audits = await conn.fetchval(
            "SELECT count(*) FROM banking_transactions WHERE session_id = $1", uuid.UUID(session_id)
        )
    return session, [row["seq"] for row in seqs], audits


async def test_records_reach_postgresql_in_order(pool: asyncpg.Pool, spool_dir: Path) -> None:
    writer = RecordingWriter(PgJournal(pool))
    journal = DurableJournal(writer, spool_dir)
    await journal.start()
    session_id = str(uuid.uuid4())
    await write_call(journal, session_id, 6)
    await journal.aclose()
    session, seqs, audits = await stored(pool, session_id)
    assert session is not None and session["outcome"] == "completed" and session["ended_at"] is not None
    assert seqs == list(range(6)) and audits == 1
    assert journal.depth == 0 and not (spool_dir / PENDING).exists()


async def test_a_missing_table_spools_records_which_replay_in_order_exactly_once(
    pool: asyncpg.Pool, spool_dir: Path
) -> None:
    writer = RecordingWriter(PgJournal(pool))
    failures: list[int] = []
    journal = DurableJournal(
        writer, spool_dir, retry_s=FAST_RETRY_S, max_retry_s=FAST_RETRY_S, on_failure=lambda: failures.append(1)
    )
    await journal.start()
    session_id = str(uuid.uuid4())
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE conversation_turns RENAME TO conversation_turns_away")
    try:
        writes = await write_call(journal, session_id, 8)  # returns at once: nothing waits for the database
        await until(lambda: _spooled(spool_dir, writes - 1))  # all but the session start, which went through
        spooled = (spool_dir / PENDING).read_text(encoding="utf-8")
        # The spool holds redacted text only. Record ids are random UUIDs, which may hold "4321" by chance: the PIN
        # is looked for in what the records say, not in their ids.
        texts = [json.dumps(json.loads(line)["data"]) for line in spooled.splitlines() if line.strip()]
        assert not any("4321" in text for text in texts) and "[secret]" in spooled
        assert journal.depth == writes - 1
        assert failures  # each failed write is counted, for the avc_writer_failures metric
    finally:
        async with pool.acquire() as conn:
            await conn.execute("ALTER TABLE conversation_turns_away RENAME TO conversation_turns")
    await until(lambda: drained(journal))
    await journal.aclose()
    session, seqs, audits = await stored(pool, session_id)
    assert seqs == list(range(8)) and audits == 1
    assert session is not None and session["outcome"] == "completed"
    assert len(writer.written) == len(set(writer.written)) == writes  # each record written once
    assert not (spool_dir / PENDING).exists()


async def _spooled(spool_dir: Path, count: int) -> bool:
    try:
        lines = (spool_dir / PENDING).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return False
    return len(lines) >= count


async def test_a_whole_call_goes_on_while_postgresql_is_unreachable(
    proxy: TcpProxy, proxied_pool: asyncpg.Pool, pool: asyncpg.Pool, bank: PgBank, spool_dir: Path, real_call: RealCall
) -> None:
    journal = DurableJournal(PgJournal(proxied_pool, timeout_s=1.0), spool_dir, retry_s=FAST_RETRY_S)
    await journal.start()
    await proxy.cut()
    dialogue = Dialogue(
        CallInfo(real_call.call_id, "+12025550101", real_call.b2b_key),
        bank,
        FastPathUnderstander(),
        MemoryContextStore(),
        journal,
        today=lambda: dt.date(2026, 11, 21),
    )
    await dialogue.start()
    await dialogue.handle_text("what's my balance")
    await dialogue.handle_text("March 5th, 1980")
    reply = await dialogue.handle_digits("1881")
    assert "available credit" in reply.say  # the caller was served while the record could not be written
    await dialogue.close()
    await until(lambda: _spooled(spool_dir, 1))
    assert journal.depth > 0
    await proxy.restore()
    await until(lambda: drained(journal))
    await journal.aclose()
    session, seqs, audits = await stored(pool, dialogue.context.session_id)
    assert session is not None and (session["outcome"], session["intent"]) == ("caller_hangup", "balance")
    assert seqs == list(range(dialogue.context.seq))
    assert audits == 3  # verify_dob, verify_last4, balance


async def test_a_spool_left_by_a_stopped_process_is_replayed_at_start(
    proxy: TcpProxy, proxied_pool: asyncpg.Pool, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    await proxy.cut()
    first = DurableJournal(PgJournal(proxied_pool, timeout_s=1.0), spool_dir)
    await first.start()
    session_id = str(uuid.uuid4())
    writes = await write_call(first, session_id, 4)
    await first.aclose()  # the database is still down: what was queued is spooled, not lost
    assert len((spool_dir / PENDING).read_text(encoding="utf-8").splitlines()) == writes
    second = DurableJournal(PgJournal(pool), spool_dir)
    await second.start()
    await until(lambda: drained(second))
    await second.aclose()
    session, seqs, audits = await stored(pool, session_id)
    assert session is not None and seqs == [0, 1, 2, 3] and audits == 1


async def test_replaying_twice_writes_each_record_once(pool: asyncpg.Pool) -> None:
    session_id = str(uuid.uuid4())
    journal = PgJournal(pool)
    records = [
        open_record(SessionStart(session_id, "call-replay", None, None)),
        turn_record(session_id, bot_turn(0, "Hello.")),
        audit_record(session_id, AuditEntry("balance", AuthLevel.VERIFIED, "ok")),
        turn_record(session_id, bot_turn(1, "Goodbye.")),
        close_record(session_id, SessionEnd("completed", AuthLevel.VERIFIED, "balance", {})),
    ]
    for _ in range(2):  # a spool replayed again after a crash midway
        for record in records:
            await journal.write(record)
    session, seqs, audits = await stored(pool, session_id)
    assert seqs == [0, 1] and audits == 1
    assert session is not None and session["outcome"] == "completed"


async def test_a_record_the_database_refuses_is_set_aside_and_the_rest_goes_on(
    pool: asyncpg.Pool, spool_dir: Path
) -> None:
    journal = DurableJournal(PgJournal(pool), spool_dir)
    await journal.start()
    orphan = str(uuid.uuid4())  # no session row: the turn breaks the foreign key
    await journal.turn(orphan, bot_turn(0, "Hello."))
    session_id = str(uuid.uuid4())
    await write_call(journal, session_id, 2)
    await journal.aclose()
    _, seqs, _ = await stored(pool, session_id)
    assert seqs == [0, 1]
    spool = Spool(spool_dir)
    try:
        [rejected] = spool.rejected()
    finally:
        spool.close()
    assert json.loads(rejected)["session_id"] == orphan


async def test_a_torn_last_line_is_set_aside_and_the_rest_replayed(pool: asyncpg.Pool, spool_dir: Path) -> None:
    session_id = str(uuid.uuid4())
    spool = Spool(spool_dir)
    spool.append(
        [open_record(SessionStart(session_id, "call-torn", None, None)), turn_record(session_id, bot_turn(0, "Hi."))]
    )
    spool.close()
    with (spool_dir / PENDING).open("a", encoding="utf-8") as pending:
        pending.write('{"v":1,"id":"3f0c')  # the process died in the middle of an append
    journal = DurableJournal(PgJournal(pool), spool_dir)
    await journal.start()
    await until(lambda: drained(journal))
    await journal.aclose()
    _, seqs, _ = await stored(pool, session_id)
    assert seqs == [0]


def test_one_spool_directory_serves_one_process(spool_dir: Path) -> None:
    first = Spool(spool_dir)
    try:
        with pytest.raises(SpoolLocked):
            Spool(spool_dir)
    finally:
        first.close()
    Spool(spool_dir).close()  # free again once released


def test_spool_files_are_private(spool_dir: Path) -> None:
    spool = Spool(spool_dir)
    try:
        session_id = str(uuid.uuid4())
        spool.append([turn_record(session_id, bot_turn(0, "Hello."))])
        assert (spool_dir / PENDING).stat().st_mode & 0o077 == 0
        assert spool_dir.stat().st_mode & 0o077 == 0
        assert len(spool) == 1
    finally:
        spool.close()

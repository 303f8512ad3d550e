"""A `Journal` whose writes never wait for PostgreSQL and are never lost while it is down.

A call's writes (`open`, `turn`, `audit`, `close`) only put a `JournalRecord` on an in-memory queue and
return. One background task writes the queue to PostgreSQL in order. When a write fails because the
database is unreachable (refused, timed out, a table or privilege missing), that record and every later
one go to the on-disk spool (banking/spool.py) instead, fsynced, so order is kept and nothing waits on
a dead database. The task retries the spool, oldest first, after `retry_s`, doubling up to
`max_retry_s`; once the spool is empty, writes go straight to the database again. Replaying is safe
however often it happens: each record carries a UUID and is written idempotently (banking/journal.py).

A record the database refuses for what it is (a violated constraint, malformed data) would fail
forever: it is set aside in the spool's rejected file, logged, and the rest goes on.

`depth` (records in memory plus records spooled) is what the `avc_writer_queue_depth` gauge shows;
`on_failure` is called for every write that failed for want of a database (`avc_writer_failures`).
Close dialogues before the journal: `aclose` writes or spools what is queued, then stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Protocol

import asyncpg

from banking.journal import (
    AuditEntry,
    JournalRecord,
    SessionEnd,
    SessionStart,
    Turn,
    audit_record,
    close_record,
    open_record,
    turn_record,
)
from banking.spool import Spool

log = logging.getLogger(__name__)

DEFAULT_RETRY_S: Final = 1.0
DEFAULT_MAX_RETRY_S: Final = 30.0
DEFAULT_WRITE_TIMEOUT_S: Final = 10.0
# The record itself is wrong: retrying cannot help. Checked before the errors that mean "database down",
# since asyncpg's DataError is also a PostgresError and its client-side DataError an InterfaceError.
_REJECTED: Final = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, KeyError, TypeError, ValueError)


class RecordWriter(Protocol):
    async def write(self, record: JournalRecord) -> None:
        """Write one record idempotently, or raise."""
        ...


class DurableJournal:
    def __init__(
        self,
        writer: RecordWriter,
        spool_dir: Path,
        *,
        retry_s: float = DEFAULT_RETRY_S,
        max_retry_s: float = DEFAULT_MAX_RETRY_S,
        write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        if retry_s <= 0 or max_retry_s < retry_s or write_timeout_s <= 0:
            raise ValueError("need 0 < retry_s <= max_retry_s and write_timeout_s > 0")
        self._writer = writer
        self._spool_dir = spool_dir
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._write_timeout_s = write_timeout_s
        self._on_failure = on_failure
        self._queue: asyncio.Queue[JournalRecord | None] = asyncio.Queue()
        self._spool: Spool | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._down = False

    @property
    def depth(self) -> int:
        """Records not yet in PostgreSQL: queued in memory or spooled on disk."""
        return self._queue.qsize() + (len(self._spool) if self._spool is not None else 0)

    async def start(self) -> None:
        """Open the spool (replaying what a previous process left there) and start writing."""
        if self._task is not None:
            return
        self._spool = await asyncio.to_thread(Spool, self._spool_dir)
        if len(self._spool):
            log.warning("%d call-record writes left spooled in %s: replaying them", len(self._spool), self._spool_dir)
        self._task = asyncio.create_task(self._run(), name="journal-writer")

    async def aclose(self) -> None:
        """Write (or spool) everything queued so far, then stop."""
        if self._task is None or self._closing:
            return
        self._closing = True
        self._queue.put_nowait(None)
        await self._task
        if self._spool is not None:
            await asyncio.to_thread(self._spool.close)

    # -- the Journal protocol: never waits --

    def _put(self, record: JournalRecord) -> None:
        if self._closing:
            log.error("call record %s written after the journal was closed: not kept", record.kind)
            return
        self._queue.put_nowait(record)

    async def open(self, start: SessionStart) -> None:
        self._put(open_record(start))

    async def turn(self, session_id: str, turn: Turn) -> None:
        self._put(turn_record(session_id, turn))

    async def audit(self, session_id: str, entry: AuditEntry) -> None:
        self._put(audit_record(session_id, entry))

    async def close(self, session_id: str, end: SessionEnd) -> None:
        self._put(close_record(session_id, end))

    # -- the writer task --

    async def _run(self) -> None:
        spool = self._spool
        assert spool is not None  # set by start() before the task exists
        retry_s = self._retry_s
        while True:
            if len(spool):
                if await self._replay(spool):
                    retry_s = self._retry_s
                    continue
                if not await self._spool_incoming(spool, retry_s):
                    return
                retry_s = min(retry_s * 2, self._max_retry_s)
                continue
            record = await self._queue.get()
            if record is None:
                return
            if not await self._write(spool, record):
                await asyncio.to_thread(spool.append, [record])

    async def _write(self, spool: Spool, record: JournalRecord) -> bool:
        """Write one record; False when the database is unavailable (the record is still to be written)."""
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self._writer.write(record)
        except _REJECTED as exc:
            log.error("call record %s %s refused, set aside: %s: %s", record.kind, record.id, type(exc).__name__, exc)
            await asyncio.to_thread(spool.reject, record)
            return True
        except Exception as exc:  # unreachable, timed out, or unknown: keep the record and try again later
            if self._on_failure is not None:
                self._on_failure()
            if not self._down:
                log.error(
                    "PostgreSQL unavailable (%s: %s): call records go to the spool in %s",
                    type(exc).__name__,
                    exc,
                    self._spool_dir,
                )
            self._down = True
            return False
        if self._down:
            log.info("PostgreSQL is back: writing the spooled call records")
        self._down = False
        return True

    async def _replay(self, spool: Spool) -> bool:
        """Write the spool oldest first, up to the first failure; True when it is empty."""
        records = await asyncio.to_thread(spool.pending)
        written = 0
        for record in records:
            if not await self._write(spool, record):
                break
            written += 1
        await asyncio.to_thread(spool.keep_from, records, written)
        if written == len(records):
            log.info("replayed %d spooled call records", written)
        return written == len(records)

    async def _spool_incoming(self, spool: Spool, wait_s: float) -> bool:
        """For `wait_s`, move new records to the spool as they come (after the older ones); False at close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    first = await self._queue.get()
            except TimeoutError:
                return True
            batch: list[JournalRecord | None] = [first]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await asyncio.to_thread(spool.append, _records(batch))
            if None in batch:
                return False
        return True


def _records(batch: Sequence[JournalRecord | None]) -> list[JournalRecord]:
    return [record for record in batch if record is not None]

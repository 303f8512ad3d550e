"""The call record in PostgreSQL (sql/0002): one `call_sessions` row, its turns, and an audit row per operation.

Text reaches a `Turn` only through `caller_turn` / `bot_turn`, which redact it, so no card number, code
or date of birth can be stored by forgetting a call. A journal never raises for a storage failure: the
caller is on the line, so the failure is logged and the call goes on.

Each write is a `JournalRecord`: a UUID, the time it happened and JSON data, so it can wait on disk
through a PostgreSQL outage and be written later (banking/durable_journal.py). Writing a record twice
changes nothing: inserts carry the record's UUID and do nothing on a conflict, and a session's end is
only written while it has none. `PgJournal.write` raises; its `Journal` methods log instead.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

import asyncpg

from banking.backend import AuthLevel
from banking.redact import ANSWER_MASK, redact

log = logging.getLogger(__name__)

_STORAGE_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class RecordKind(StrEnum):
    OPEN = "open"
    TURN = "turn"
    AUDIT = "audit"
    CLOSE = "close"


RECORD_VERSION: Final = 1


class Speaker(StrEnum):
    CALLER = "caller"
    BOT = "bot"


@dataclass(frozen=True, slots=True)
class Turn:
    seq: int
    speaker: Speaker
    text: str  # already redacted
    timings: Mapping[str, float] = field(default_factory=dict)


def caller_turn(
    seq: int, text: str, *, secret: bool, withheld: bool = False, timings: Mapping[str, float] | None = None
) -> Turn:
    """A caller's words, redacted; `secret` when a code was asked for, so every digit string is masked.

    `withheld` when the answer itself is a credential (a date of birth): nothing of it is kept, because a misheard
    date the redactor cannot recognise ("March the, uh, fifth") still gives part of it away.
    """
    safe = ANSWER_MASK if withheld and text.strip() else redact(text, mask_all_digits=secret)
    return Turn(seq, Speaker.CALLER, safe, dict(timings or {}))


def keypad_turn(seq: int, digits: str, timings: Mapping[str, float] | None = None) -> Turn:
    """Keypad input is recorded by its length only: it is where card endings and codes are typed."""
    return Turn(seq, Speaker.CALLER, f"[keypad: {len(digits)} keys]", dict(timings or {}))


def bot_turn(seq: int, text: str, timings: Mapping[str, float] | None = None) -> Turn:
    """What the bot said. Its dates are delivery dates from templates, so only card numbers are masked."""
    return Turn(seq, Speaker.BOT, redact(text, mask_dates=False), dict(timings or {}))


@dataclass(frozen=True, slots=True)
class SessionStart:
    session_id: str
    call_id: str
    b2b_key: str | None
    ani: str | None

    @property
    def ani_last4(self) -> str | None:
        digits = "".join(char for char in self.ani or "" if char.isdigit())
        return digits[-4:] or None


@dataclass(frozen=True, slots=True)
class SessionEnd:
    outcome: str
    auth_level: AuthLevel | None
    intent: str | None
    record: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    operation: str
    auth_level: AuthLevel | None
    outcome: str
    params: Mapping[str, str] = field(default_factory=dict)  # never a secret: card ids, counts, reasons


class Journal(Protocol):
    async def open(self, start: SessionStart) -> None: ...

    async def turn(self, session_id: str, turn: Turn) -> None: ...

    async def audit(self, session_id: str, entry: AuditEntry) -> None: ...

    async def close(self, session_id: str, end: SessionEnd) -> None: ...


class NullJournal:
    """Records nothing: for a dialogue run without a database (demos, unit tests of wording)."""

    async def open(self, start: SessionStart) -> None:
        return None

    async def turn(self, session_id: str, turn: Turn) -> None:
        return None

    async def audit(self, session_id: str, entry: AuditEntry) -> None:
        return None

    async def close(self, session_id: str, end: SessionEnd) -> None:
        return None


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One write of the call record: `data` holds JSON values only, already redacted."""

    id: str  # a UUID; a session's start uses the session's own id, the row it creates
    kind: RecordKind
    session_id: str
    at: dt.datetime  # when it happened, not when it reached PostgreSQL (which may be after an outage)
    data: Mapping[str, Any]

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": RECORD_VERSION,
                "id": self.id,
                "kind": self.kind.value,
                "session_id": self.session_id,
                "at": self.at.isoformat(),
                "data": dict(self.data),
            },
            separators=(",", ":"),
            default=str,
        )

    @classmethod
    def from_json(cls, line: str | bytes) -> JournalRecord:
        """The record of one spooled line; ValueError when it is not one."""
        raw = json.loads(line)
        if not isinstance(raw, dict) or raw.get("v") != RECORD_VERSION:
            raise ValueError("not a journal record of a known version")
        data, at = raw.get("data"), dt.datetime.fromisoformat(str(raw.get("at")))
        if not isinstance(data, dict) or at.tzinfo is None:
            raise ValueError("a journal record needs object data and a time with its zone")
        return cls(
            id=str(uuid.UUID(str(raw.get("id")))),
            kind=RecordKind(str(raw.get("kind"))),
            session_id=str(uuid.UUID(str(raw.get("session_id")))),
            at=at,
            data=data,
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def open_record(start: SessionStart) -> JournalRecord:
    data = {"call_id": start.call_id, "b2b_key": start.b2b_key, "ani_last4": start.ani_last4}
    return JournalRecord(start.session_id, RecordKind.OPEN, start.session_id, _now(), data)


def turn_record(session_id: str, turn: Turn) -> JournalRecord:
    data = {"seq": turn.seq, "speaker": turn.speaker.value, "text": turn.text, "timings": dict(turn.timings)}
    return JournalRecord(str(uuid.uuid4()), RecordKind.TURN, session_id, _now(), data)


def audit_record(session_id: str, entry: AuditEntry) -> JournalRecord:
    data = {
        "operation": entry.operation,
        "auth_level": None if entry.auth_level is None else int(entry.auth_level),
        "outcome": entry.outcome,
        "params": dict(entry.params),
    }
    return JournalRecord(str(uuid.uuid4()), RecordKind.AUDIT, session_id, _now(), data)


def close_record(session_id: str, end: SessionEnd) -> JournalRecord:
    data = {
        "outcome": end.outcome,
        "auth_level": None if end.auth_level is None else int(end.auth_level),
        "intent": end.intent,
        "record": json.loads(json.dumps(dict(end.record), default=str)),
    }
    return JournalRecord(str(uuid.uuid4()), RecordKind.CLOSE, session_id, _now(), data)


_SQL: Final[Mapping[RecordKind, str]] = {
    RecordKind.OPEN: "INSERT INTO call_sessions (id, call_id, b2b_key, ani_last4, started_at, node) "
    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    # No conflict target: a turn already there, by its id or by its number, is not written again.
    RecordKind.TURN: "INSERT INTO conversation_turns (id, session_id, seq, speaker, text, timings, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    RecordKind.AUDIT: "INSERT INTO banking_transactions "
    "(id, session_id, operation, auth_level, params, outcome, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    # GREATEST: a wall clock stepped back between start and end must not break the CHECK on the row.
    # A row closed as abandoned at a node's start-up is closed again, for real, when a recovered call ends.
    RecordKind.CLOSE: "UPDATE call_sessions SET ended_at = GREATEST(started_at, $2), outcome = $3, auth_level = $4, "
    "intent = $5, record = $6 WHERE id = $1 AND (ended_at IS NULL OR outcome = 'connector_lost')",
}


# A crash leaves its calls' rows open: at start-up a node closes its own (no process owns them any more), and any
# node closes rows left open longer than a call may last (their node is gone, or was renamed).
_CLOSE_ABANDONED: Final = (
    "UPDATE call_sessions SET ended_at = GREATEST(started_at, now()), outcome = $1 "
    "WHERE ended_at IS NULL AND (node = $2 OR started_at < now() - make_interval(secs => $3))"
)
ABANDONED_OUTCOME: Final = "connector_lost"


async def close_abandoned(pool: asyncpg.Pool, node: str, older_than_s: float, *, timeout_s: float = 5.0) -> int:
    """Close the call rows no process owns: those `node` left open (call at its start-up, before it takes calls)
    and any row open for longer than `older_than_s` (the longest a call may last, plus a margin).
    Returns how many were closed; their outcome says the connector was lost mid-call."""
    async with pool.acquire(timeout=timeout_s) as conn:
        status = await conn.execute(_CLOSE_ABANDONED, ABANDONED_OUTCOME, node, float(older_than_s), timeout=timeout_s)
    return int(str(status).rsplit(" ", 1)[-1])


def _arguments(record: JournalRecord, node: str | None = None) -> tuple[object, ...]:
    data, session = record.data, uuid.UUID(record.session_id)
    if record.kind is RecordKind.OPEN:
        return session, data["call_id"], data["b2b_key"], data["ani_last4"], record.at, node
    if record.kind is RecordKind.TURN:
        timings = json.dumps(data["timings"])
        return uuid.UUID(record.id), session, data["seq"], data["speaker"], data["text"], timings, record.at
    if record.kind is RecordKind.AUDIT:
        params = json.dumps(data["params"])
        return uuid.UUID(record.id), session, data["operation"], data["auth_level"], params, data["outcome"], record.at
    return session, record.at, data["outcome"], data["auth_level"], data["intent"], json.dumps(data["record"])


class PgJournal:
    """Writes call records to PostgreSQL; rows it opens carry `node`, the connector node that owns the call."""

    def __init__(self, pool: asyncpg.Pool, *, node: str | None = None, timeout_s: float = 5.0) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        self.node = node

    async def write(self, record: JournalRecord) -> None:
        """Write one record, or raise what PostgreSQL (or the connection to it) raised.

        KeyError, TypeError or ValueError mean the record itself is malformed (a damaged spool line).
        """
        arguments = _arguments(record, self.node)
        async with self._pool.acquire(timeout=self._timeout_s) as conn:
            await conn.execute(_SQL[record.kind], *arguments, timeout=self._timeout_s)

    async def _logged(self, what: str, record: JournalRecord) -> None:
        try:
            await self.write(record)
        except _STORAGE_ERRORS as exc:
            log.error("call record: %s not written: %s: %s", what, type(exc).__name__, exc)

    async def open(self, start: SessionStart) -> None:
        await self._logged("session start", open_record(start))

    async def turn(self, session_id: str, turn: Turn) -> None:
        await self._logged("turn", turn_record(session_id, turn))

    async def audit(self, session_id: str, entry: AuditEntry) -> None:
        await self._logged("audit entry", audit_record(session_id, entry))

    async def close(self, session_id: str, end: SessionEnd) -> None:
        await self._logged("session end", close_record(session_id, end))

"""The call record in PostgreSQL (sql/0002): one `call_sessions` row, its turns, and an audit row per operation.

Text reaches a `Turn` only through `caller_turn` / `bot_turn`, which redact it, so no card number, code
or date of birth can be stored by forgetting a call. A journal never raises for a storage failure: the
caller is on the line, so the failure is logged and the call goes on. (Buffering writes through a
PostgreSQL outage is the job of the durable write queue that will wrap this journal.)
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

import asyncpg

from banking.backend import AuthLevel
from banking.redact import redact

log = logging.getLogger(__name__)

_STORAGE_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class Speaker(StrEnum):
    CALLER = "caller"
    BOT = "bot"


@dataclass(frozen=True, slots=True)
class Turn:
    seq: int
    speaker: Speaker
    text: str  # already redacted
    timings: Mapping[str, float] = field(default_factory=dict)


def caller_turn(seq: int, text: str, *, secret: bool, timings: Mapping[str, float] | None = None) -> Turn:
    """A caller's words, redacted; `secret` when a code was asked for, so every digit string is masked."""
    return Turn(seq, Speaker.CALLER, redact(text, mask_all_digits=secret), dict(timings or {}))


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


class PgJournal:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _execute(self, what: str, query: str, *args: object) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.execute(query, *args)
        except _STORAGE_ERRORS as exc:
            log.error("call record: %s not written: %s: %s", what, type(exc).__name__, exc)

    async def open(self, start: SessionStart) -> None:
        await self._execute(
            "session start",
            "INSERT INTO call_sessions (id, call_id, b2b_key, ani_last4) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (id) DO NOTHING",
            uuid.UUID(start.session_id),
            start.call_id,
            start.b2b_key,
            start.ani_last4,
        )

    async def turn(self, session_id: str, turn: Turn) -> None:
        await self._execute(
            "turn",
            "INSERT INTO conversation_turns (session_id, seq, speaker, text, timings) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (session_id, seq) DO NOTHING",
            uuid.UUID(session_id),
            turn.seq,
            turn.speaker.value,
            turn.text,
            json.dumps(dict(turn.timings)),
        )

    async def audit(self, session_id: str, entry: AuditEntry) -> None:
        await self._execute(
            "audit entry",
            "INSERT INTO banking_transactions (session_id, operation, auth_level, params, outcome) "
            "VALUES ($1, $2, $3, $4, $5)",
            uuid.UUID(session_id),
            entry.operation,
            None if entry.auth_level is None else int(entry.auth_level),
            json.dumps(dict(entry.params)),
            entry.outcome,
        )

    async def close(self, session_id: str, end: SessionEnd) -> None:
        await self._execute(
            "session end",
            "UPDATE call_sessions SET ended_at = now(), outcome = $2, auth_level = $3, intent = $4, record = $5 "
            "WHERE id = $1 AND ended_at IS NULL",
            uuid.UUID(session_id),
            end.outcome,
            None if end.auth_level is None else int(end.auth_level),
            end.intent,
            json.dumps(dict(end.record), default=str),
        )

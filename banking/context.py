"""The per-call dialogue context, and where it is kept between turns: `ContextStore`, with Redis in production.

The context holds what the dialogue must not forget if the process dies mid-call: the state, who the
caller was identified as, the auth level earned, and the counts of failed verifications and
misunderstandings (so a restart cannot reset a caller's remaining attempts). Redis keeps it with a TTL,
so a call that vanishes without a clean end leaves nothing behind for long.

Redis is a cache here, not a vault: the context holds customer ids and counters, never a date of birth,
a card ending, a code or what the bot said (which may include a balance). When Redis fails, the call
goes on from the copy in memory, and the failure is logged once until Redis is back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from banking.backend import AuthLevel
from banking.fields import optional, str_list, typed
from banking.intents import Intent

log = logging.getLogger(__name__)


CONTEXT_VERSION: Final = 1
DEFAULT_TTL: Final = dt.timedelta(hours=2)  # longer than any call (the connector's max call duration is shorter)
DEFAULT_PREFIX: Final = "avc:ctx:"
MAX_CALL_ID_LENGTH: Final = 256


class DialogueState(StrEnum):
    LISTEN = "listen"  # waiting for a request
    AUTH_DOB = "auth_dob"
    AUTH_FACTOR = "auth_factor"  # last four digits of a card, or star for a one-time code
    AUTH_OTP = "auth_otp"
    CHOOSE_CARD = "choose_card"
    CONFIRM = "confirm"
    OFFER_AGENT = "offer_agent"  # a yes/no question whose yes is a transfer
    WRAP_UP = "wrap_up"  # "anything else?"
    ENDED = "ended"


class ContextError(ValueError):
    """A stored context that cannot be read back (another version, or corrupted)."""


def check_call_id(call_id: str) -> str:
    """`call_id` if it can key a context, else ValueError: it comes from the network."""
    if not call_id or len(call_id) > MAX_CALL_ID_LENGTH or not call_id.isprintable():
        raise ValueError(f"unusable Call-ID ({len(call_id)} characters, printable={call_id.isprintable()})")
    return call_id


@dataclass(slots=True)
class CallContext:
    call_id: str
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: DialogueState = DialogueState.LISTEN
    candidates: list[str] = field(default_factory=list)  # customers whose phone matches the ANI
    dob_matches: list[str] = field(default_factory=list)  # candidates whose date of birth was given
    customer_id: str | None = None
    level: AuthLevel | None = None  # None: not even identified by the calling number
    failures: int = 0  # failed verifications in this call
    misunderstood: int = 0  # consecutive turns not understood
    silences: int = 0  # consecutive questions met with silence
    pending_intent: Intent | None = None  # the request waiting for verification or a card choice
    card_options: list[str] = field(default_factory=list)  # card ids offered in a keypad menu, in order
    chosen_card: str | None = None  # card id waiting for a yes
    confirm_change: bool = False  # the pending card change was understood by a model: ask before making it
    intents: list[str] = field(default_factory=list)  # every request made, for the call record
    seq: int = 0  # next turn number
    transfer_reason: str | None = None
    offer_reason: str | None = None  # why an agent was offered (OFFER_AGENT): the transfer's reason on a yes
    last_say: str = ""  # kept in memory only (see module docstring)

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": CONTEXT_VERSION,
                "call_id": self.call_id,
                "session_id": self.session_id,
                "state": self.state.value,
                "candidates": self.candidates,
                "dob_matches": self.dob_matches,
                "customer_id": self.customer_id,
                "level": None if self.level is None else int(self.level),
                "failures": self.failures,
                "misunderstood": self.misunderstood,
                "silences": self.silences,
                "pending_intent": None if self.pending_intent is None else self.pending_intent.value,
                "card_options": self.card_options,
                "chosen_card": self.chosen_card,
                "confirm_change": self.confirm_change,
                "intents": self.intents,
                "seq": self.seq,
                "transfer_reason": self.transfer_reason,
                "offer_reason": self.offer_reason,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> CallContext:
        try:
            raw: Any = json.loads(data)
            if not isinstance(raw, dict) or raw.get("v") != CONTEXT_VERSION:
                raise ContextError(f"unsupported context version {raw.get('v') if isinstance(raw, dict) else None!r}")
            return cls(
                call_id=check_call_id(typed(raw, "call_id", str)),
                session_id=str(uuid.UUID(typed(raw, "session_id", str))),
                state=DialogueState(typed(raw, "state", str)),
                candidates=str_list(raw, "candidates"),
                dob_matches=str_list(raw, "dob_matches"),
                customer_id=optional(raw, "customer_id", str),
                level=None if raw.get("level") is None else AuthLevel(typed(raw, "level", int)),
                failures=typed(raw, "failures", int),
                misunderstood=typed(raw, "misunderstood", int),
                silences=optional(raw, "silences", int) or 0,  # absent from older contexts
                pending_intent=None if raw.get("pending_intent") is None else Intent(raw["pending_intent"]),
                card_options=str_list(raw, "card_options"),
                chosen_card=optional(raw, "chosen_card", str),
                confirm_change=optional(raw, "confirm_change", bool) or False,  # absent from older contexts
                intents=str_list(raw, "intents"),
                seq=typed(raw, "seq", int),
                transfer_reason=optional(raw, "transfer_reason", str),
                offer_reason=optional(raw, "offer_reason", str),  # absent from older contexts
            )
        except ContextError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise ContextError(f"unreadable context: {type(exc).__name__}: {exc}") from exc


class ContextStore(Protocol):
    """Keeps call contexts between turns. Implementations never raise for a storage failure: they log it."""

    async def load(self, call_id: str) -> CallContext | None: ...

    async def save(self, context: CallContext) -> None: ...

    async def delete(self, call_id: str) -> None: ...


class MemoryContextStore:
    """Contexts in this process only: for a single node without Redis, and for tests."""

    def __init__(self) -> None:
        self._contexts: dict[str, str] = {}

    async def load(self, call_id: str) -> CallContext | None:
        data = self._contexts.get(call_id)
        return None if data is None else CallContext.from_json(data)

    async def save(self, context: CallContext) -> None:
        self._contexts[context.call_id] = context.to_json()

    async def delete(self, call_id: str) -> None:
        self._contexts.pop(call_id, None)


class RedisContextStore:
    """Contexts in Redis under `prefix + Call-ID`, each save renewing the TTL."""

    def __init__(
        self, client: aioredis.Redis, *, ttl: dt.timedelta = DEFAULT_TTL, prefix: str = DEFAULT_PREFIX
    ) -> None:
        if ttl.total_seconds() < 1:
            raise ValueError(f"context TTL must be at least one second, got {ttl}")
        self._client = client
        self._ttl_s = int(ttl.total_seconds())
        self._prefix = prefix
        self._degraded = False

    @classmethod
    def from_url(
        cls,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        ttl: dt.timedelta = DEFAULT_TTL,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = 0.25,
    ) -> RedisContextStore:
        """A store whose Redis calls fail fast: a turn must not wait on a dead cache (no retries, short timeouts)."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, ttl=ttl, prefix=prefix)

    def key(self, call_id: str) -> str:
        return self._prefix + check_call_id(call_id)

    async def close(self) -> None:
        await self._client.aclose()

    def _failed(self, action: str, exc: BaseException) -> None:
        if not self._degraded:
            log.warning("Redis %s failed, calls go on from memory: %s: %s", action, type(exc).__name__, exc)
        self._degraded = True

    def _succeeded(self) -> None:
        if self._degraded:
            log.info("Redis is reachable again")
        self._degraded = False

    async def load(self, call_id: str) -> CallContext | None:
        try:
            data = await self._client.get(self.key(call_id))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("load", exc)
            return None
        self._succeeded()
        if data is None:
            return None
        try:
            return CallContext.from_json(data)
        except ContextError as exc:
            log.error("discarding the stored context of a call: %s", exc)
            return None

    async def save(self, context: CallContext) -> None:
        try:
            await self._client.set(self.key(context.call_id), context.to_json(), ex=self._ttl_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("save", exc)
            return
        self._succeeded()

    async def delete(self, call_id: str) -> None:
        try:
            await self._client.delete(self.key(call_id))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("delete", exc)
            return
        self._succeeded()

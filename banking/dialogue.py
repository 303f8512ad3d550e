"""The banking dialogue of one call: an explicit state machine from greeting to goodbye or transfer.

States (`DialogueState`), in the order a call meets them:
- greet (`start`): the calling number is looked up, which identifies the caller (or not);
- LISTEN: waits for a request; a service asked by an unverified caller starts authentication;
- AUTH_DOB, then AUTH_FACTOR (last four digits by keypad, or star for a one-time code: AUTH_OTP):
  a mismatch goes back to AUTH_DOB, the third one locks voice verification and transfers;
- serve: the request, possibly through CHOOSE_CARD (keypad menu), CONFIRM (before a block, and
  before any card change that only a model understood) or OFFER_AGENT (a returned card, or a question this
  line cannot serve);
- WRAP_UP: "anything else?": another request, or goodbye;
- ENDED: after a goodbye (hang up) or a transfer (asked for, an angry caller, two turns in a row not
  understood or not heard, lockout, unknown caller, bank unreachable). A transfer that fails goes back to
  WRAP_UP where the bot can still help, and says goodbye where it cannot (`transfer_failed`); a caller
  silent twice in a row after a question is told goodbye (`handle_silence`).

A caller may change their mind at any point: a new request while verifying replaces the pending one,
and one made at a card menu or a confirmation abandons it. A yes/no question cut off by a barge-in
(`heard`) is asked again rather than answered by a "yes" the caller gave without hearing it whole.

Identification is by the calling number (auth level 0, `AuthLevel.ANI`); a phone shared by several
customers is resolved by their answers. Verification (level 1) is the date of birth (spoken, or typed
as eight digits), then the last four digits of a card or a one-time code, by keypad only: digits spoken
instead are refused and masked in the record. Both factors are checked before the caller hears
anything, and a failure never says which one was wrong. Three failures lock voice verification for the
customers of the calling number (in the bank, so calling again does not help) and transfer.

Dates of birth and digits typed or spoken for verification are read by this module's deterministic
code only; an `Understander` (which may be an LLM) sees redacted text, never those.

Every utterance is first screened for manipulation (banking/guard.py): such turns get no data and no action
and count as not understood (so do those the semantic understander reads as manipulation). Then an
`Understander` names the intent; the dialogue alone decides what that intent may do, and the backend checks
the principal again. A question the bank's knowledge base answers gets that entry's approved answer, verbatim;
a request this line cannot serve an honest "I can't do that on this line" with an agent offered. Every fact
said comes from the backend through banking/templates.py. The context is saved after every turn
(banking/context.py), and every turn and operation is journalled redacted (banking/journal.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from banking import templates
from banking.backend import (
    CARD_TRANSITIONS,
    AuthLevel,
    BackendUnavailable,
    BankBackend,
    BankError,
    Card,
    InvalidCardState,
    NotAuthorized,
    NotFound,
    Operation,
    Principal,
)
from banking.context import CallContext, ContextStore, DialogueState, check_call_id
from banking.dates import DateOrder, parse_date
from banking.guard import screen
from banking.intents import (
    MIN_CONFIDENCE,
    SERVICE_INTENTS,
    Expect,
    Intent,
    Prefetching,
    Understander,
    Understanding,
)
from banking.journal import (
    AuditEntry,
    Journal,
    NullJournal,
    SessionEnd,
    SessionStart,
    Turn,
    bot_turn,
    caller_turn,
    keypad_turn,
)
from banking.knowledge import KnowledgeBase
from banking.numbers import has_digits
from banking.redact import redact

log = logging.getLogger(__name__)

MAX_AUTH_FAILURES: Final = 3
MAX_MISUNDERSTOOD: Final = 2
MAX_SILENCES: Final = 2  # in a row: the second ends the call
# After a failed transfer the bot goes on only where it was still able to help.
_RESUMABLE_TRANSFERS: Final = frozenset(
    {"caller_request", "angry_caller", "not_understood", "undeliverable_card", "out_of_scope"}
)
SURE: Final = 0.9  # below this (a model's reading, not a clear phrasing) a card change is confirmed first
MAX_TEXT_CHARS: Final = 1000  # longer "utterances" are not speech; the rest is not read
MAX_MENU_CARDS: Final = 9  # one keypad digit each
TRANSACTIONS_TOLD: Final = 3
LAST4_DIGITS: Final = 4
OTP_DIGITS: Final = 6
KEYPAD_DOB_DIGITS: Final = 8  # MMDDYYYY, or DDMMYYYY where dates are written day first
KEYPAD_OTP_REQUEST: Final = "*"
KEYPAD_AGENT: Final = "0"
_KEYPAD_KEYS: Final = frozenset("0123456789*#")

_CARD_OPERATIONS: Final[Mapping[Intent, Operation]] = {
    Intent.LOST_STOLEN: Operation.BLOCK_CARD,
    Intent.LOCK_CARD: Operation.LOCK_CARD,
    Intent.UNLOCK_CARD: Operation.UNLOCK_CARD,
    Intent.ACTIVATE_CARD: Operation.ACTIVATE_CARD,
}
_SECRET_STATES: Final = frozenset({DialogueState.AUTH_FACTOR, DialogueState.AUTH_OTP})  # keypad only


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What the banking layer knows of a call: its identity and the caller's number, nothing of SIP.

    `Dialogue` raises ValueError for a Call-ID that cannot key a context (empty, too long, control
    characters): it comes from the network.
    """

    call_id: str
    ani: str | None
    b2b_key: str | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    """Hand the call to a human agent. `summary` is ASCII built from codes and ids, safe for a SIP header."""

    reason: str
    summary: str


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str


Action = Transfer | Hangup


@dataclass(frozen=True, slots=True)
class Reply:
    say: str
    expect: Expect
    action: Action | None = None
    max_digits: int | None = None  # with Expect.DIGITS: how many keys complete the entry


class Dialogue:
    """The banking conversation of one call: owns the call's context (state, authentication, pending request) and
    writes it to the context store and journal after every turn. The connector's banking responder drives it, one
    caller turn at a time (`start`, `handle_text`, `handle_digits`, `handle_silence`, `heard`, then `close`)."""

    def __init__(
        self,
        call: CallInfo,
        backend: BankBackend,
        understander: Understander,
        store: ContextStore,
        journal: Journal | None = None,
        *,
        knowledge: KnowledgeBase | None = None,
        today: Callable[[], dt.date] = dt.date.today,
        date_order: DateOrder = DateOrder.MDY,
    ) -> None:
        self._call = CallInfo(check_call_id(call.call_id), call.ani, call.b2b_key)
        self._backend = backend
        self._understander = understander
        self._knowledge = knowledge or KnowledgeBase(())
        self._store = store
        self._journal: Journal = journal or NullJournal()
        self._today = today
        self._date_order = date_order
        self._context = CallContext(call_id=self._call.call_id)
        self._lock = asyncio.Lock()  # one turn at a time: a key press may arrive while speech is handled
        self._closed = False
        self._question_cut = False  # the last reply was cut short by a barge-in

    @property
    def context(self) -> CallContext:
        return self._context

    # -- entry points --

    async def start(self) -> Reply:
        """Greet the caller, or pick a call up where a previous process left it."""
        async with self._lock:
            began = time.monotonic()
            stored = await self._store.load(self._call.call_id)
            if stored is not None:
                self._context = stored
                log.info("resuming the dialogue in state %s", stored.state)
                if stored.state is DialogueState.ENDED:
                    return Reply("", Expect.NOTHING)
                # Taken back after a connector was lost mid-call: the record says so, and the call ends for real later.
                await self._audit("session", "resumed", state=stored.state.value)
                return await self._respond(self._with_prompt(templates.RESUMED), None, began)
            await self._journal.open(
                SessionStart(self._context.session_id, self._call.call_id, self._call.b2b_key, self._call.ani)
            )
            try:
                candidates = await self._backend.find_customers_by_ani(self._call.ani) if self._call.ani else []
            except BackendUnavailable:
                return await self._respond(self._transfer("backend_unavailable", templates.UNAVAILABLE), None, began)
            self._context.candidates = candidates
            self._context.level = AuthLevel.ANI if candidates else None
            self._context.customer_id = candidates[0] if len(candidates) == 1 else None
            return await self._respond(Reply(templates.greeting(), Expect.FREE), None, began)

    def prefetch(self, text: str) -> None:
        """The caller may be done: start understanding these words (the speculative transcript) now, as
        `handle_text` would read them, so a slow understander has a head start. Only what the understander would
        see is given (redacted; never a date of birth or a secret); nothing is said, recorded or changed."""
        if not isinstance(self._understander, Prefetching) or len(text) > MAX_TEXT_CHARS:
            return
        state = self._context.state
        if state in (DialogueState.ENDED, DialogueState.AUTH_DOB) or state in _SECRET_STATES or screen(text):
            return  # read by rules alone, or not read at all
        expect, _ = self._expect()
        self._understander.prefetch(redact(text), expect)

    async def handle_text(self, text: str, timings: Mapping[str, float] | None = None) -> Reply:
        """One recognised utterance (untrusted) -> what to say and do."""
        async with self._lock:
            began = time.monotonic()
            if self._context.state is DialogueState.ENDED:
                return Reply("", Expect.NOTHING)
            state = self._context.state
            self._context.silences = 0
            # What is said where a date of birth was asked is withheld whole, whatever form it took (a date the
            # parser missed); where a code was asked, every digit string is masked.
            turn = caller_turn(
                self._context.seq,
                text,
                secret=state in _SECRET_STATES,
                withheld=state is DialogueState.AUTH_DOB,
                timings=timings,
            )
            self._context.seq += 1
            if len(text) > MAX_TEXT_CHARS:
                log.warning("utterance of %d characters cut to %d", len(text), MAX_TEXT_CHARS)
                text = text[:MAX_TEXT_CHARS]
            return await self._respond(await self._on_text(text), turn, began)

    async def handle_digits(self, digits: str, timings: Mapping[str, float] | None = None) -> Reply:
        """Keys pressed on the keypad (DTMF), collected by the connector -> what to say and do."""
        async with self._lock:
            began = time.monotonic()
            if self._context.state is DialogueState.ENDED:
                return Reply("", Expect.NOTHING)
            self._context.silences = 0
            turn = keypad_turn(self._context.seq, digits, timings)
            self._context.seq += 1
            if not digits or not set(digits) <= _KEYPAD_KEYS:
                log.warning("ignoring keypad input of %d keys with unexpected characters", len(digits))
                reply = self._misunderstood()
            else:
                reply = await self._on_digits(digits.rstrip("#") or "#")
            return await self._respond(reply, turn, began)

    async def handle_silence(self) -> Reply:
        """The caller said and pressed nothing for a while after the bot finished: ask again, and after two
        silences in a row say goodbye. A line that stays silent is not worth an agent's time."""
        async with self._lock:
            began = time.monotonic()
            if self._context.state is DialogueState.ENDED:
                return Reply("", Expect.NOTHING)
            self._context.silences += 1
            if self._context.silences >= MAX_SILENCES:
                self._context.state = DialogueState.ENDED
                reply = Reply(f"{templates.NO_INPUT_GOODBYE} {templates.GOODBYE}", Expect.NOTHING, Hangup("no_input"))
            else:
                reply = self._with_prompt(templates.NO_INPUT)
            return await self._respond(reply, None, began)

    async def engine_failed(self, stage: str) -> Reply:
        """The line's own speech recognition or synthesis failed or hung (`stage`: "asr", "tts"): apologise and
        hand the caller to an agent rather than leave them in silence. Audited; not a resumable transfer."""
        async with self._lock:
            began = time.monotonic()
            await self._audit("engine", "failed", stage=stage)
            if self._context.state is DialogueState.ENDED:
                return Reply("", Expect.NOTHING)
            return await self._respond(self._transfer("engine_failure", templates.TECHNICAL_TROUBLE), None, began)

    async def transfer_failed(self) -> Reply:
        """The transfer to an agent did not go through: go on where the bot can still help, else say goodbye.

        The bot can go on after a caller's request for a human, an angry caller, turns not understood or an
        undeliverable card; it cannot for a caller it could not identify or verify, or a bank it cannot reach.
        """
        async with self._lock:
            began = time.monotonic()
            context = self._context
            reason = context.transfer_reason or "unknown"
            await self._audit("transfer", "failed", reason=reason)
            context.transfer_reason = None
            if reason not in _RESUMABLE_TRANSFERS:
                reply = Reply(
                    f"{templates.NO_AGENT} {templates.CALL_AGAIN} {templates.GOODBYE}",
                    Expect.NOTHING,
                    Hangup("transfer_failed"),
                )
                return await self._respond(reply, None, began)
            context.misunderstood = context.silences = 0
            context.state = DialogueState.WRAP_UP
            resumed = Reply(f"{templates.NO_AGENT} {templates.ANYTHING_ELSE}", Expect.FREE)
            return await self._respond(resumed, None, began)

    def heard(self, said: str, interrupted: bool) -> None:
        """What the caller actually heard of the last reply: all of it, or `said` when a barge-in cut it short.

        Only the fact of the cut matters here: a yes/no question cut off is asked again before a yes or no
        counts (the caller may not have heard which card it was about). "Repeat" still says the whole reply.
        """
        self._question_cut = interrupted and said.strip() != self._context.last_say.strip()

    async def close(self, outcome: str = "caller_hangup") -> None:
        """The call is over (whoever ended it): write the final record and forget the context."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            context = self._context
            if context.transfer_reason is not None:
                outcome = "transferred"
            elif context.state is DialogueState.ENDED:
                outcome = "completed"
            record: dict[str, object] = {
                "intents": context.intents,
                "auth_failures": context.failures,
                "turns": context.seq,
                "final_state": context.state.value,
            }
            if context.transfer_reason is not None:
                record["transfer_reason"] = context.transfer_reason
            await self._journal.close(
                context.session_id,
                SessionEnd(outcome, context.level, context.intents[-1] if context.intents else None, record),
            )
            await self._store.delete(context.call_id)

    # -- turn plumbing --

    async def _respond(self, reply: Reply, caller: Turn | None, began: float) -> Reply:
        context = self._context
        self._question_cut = False  # a new reply: nothing of it has been cut yet
        if caller is not None:
            await self._journal.turn(context.session_id, caller)
        if reply.say:
            context.last_say = reply.say
            elapsed_ms = round((time.monotonic() - began) * 1000, 3)
            await self._journal.turn(context.session_id, bot_turn(context.seq, reply.say, {"dialogue_ms": elapsed_ms}))
            context.seq += 1
        await self._store.save(context)
        return reply

    async def _audit(self, operation: str, outcome: str, **params: str) -> None:
        entry = AuditEntry(operation, self._context.level, outcome, params)
        await self._journal.audit(self._context.session_id, entry)

    def _expect(self) -> tuple[Expect, int | None]:
        state = self._context.state
        if state is DialogueState.AUTH_DOB:
            return Expect.DATE, None
        if state is DialogueState.AUTH_FACTOR:
            return Expect.DIGITS, LAST4_DIGITS
        if state is DialogueState.AUTH_OTP:
            return Expect.DIGITS, OTP_DIGITS
        if state is DialogueState.CHOOSE_CARD:
            return Expect.DIGITS, 1
        if state in (DialogueState.CONFIRM, DialogueState.OFFER_AGENT):
            return Expect.YES_NO, None
        if state is DialogueState.ENDED:
            return Expect.NOTHING, None
        return Expect.FREE, None

    def _prompt(self) -> str:
        return {
            DialogueState.LISTEN: f"{templates.SERVICES} {templates.ASK_REQUEST}",
            DialogueState.AUTH_DOB: templates.ASK_DOB_AGAIN,
            DialogueState.AUTH_FACTOR: templates.ASK_FACTOR_AGAIN,
            DialogueState.AUTH_OTP: templates.ASK_OTP,
            DialogueState.CHOOSE_CARD: templates.ASK_MENU_CHOICE,
            DialogueState.CONFIRM: templates.ASK_YES_NO,
            DialogueState.OFFER_AGENT: templates.ASK_YES_NO,
            DialogueState.WRAP_UP: templates.ANYTHING_ELSE,
            DialogueState.ENDED: "",
        }[self._context.state]

    def _reply(self, say: str) -> Reply:
        """`say`, expecting what the current state expects."""
        expect, max_digits = self._expect()
        return Reply(say, expect, max_digits=max_digits)

    def _with_prompt(self, lead: str) -> Reply:
        return self._reply(f"{lead} {self._prompt()}")

    def _misunderstood(self, lead: str = templates.NOT_UNDERSTOOD) -> Reply:
        self._context.misunderstood += 1
        if self._context.misunderstood >= MAX_MISUNDERSTOOD:
            return self._transfer("not_understood", templates.TRANSFER_AFTER_MISUNDERSTANDING)
        return self._with_prompt(lead)

    def _transfer(self, reason: str, say: str) -> Reply:
        context = self._context
        context.state = DialogueState.ENDED
        context.transfer_reason = reason
        verified = context.level is AuthLevel.VERIFIED
        summary = "; ".join(
            (
                f"reason={reason}",
                f"auth_level={'none' if context.level is None else int(context.level)}",
                f"customer={context.customer_id if verified else 'unverified'}",
                f"intent={context.intents[-1] if context.intents else 'none'}",
                f"auth_failures={context.failures}",
            )
        )
        log.info("transferring to an agent: %s", reason)
        return Reply(say, Expect.NOTHING, Transfer(reason, summary))

    def _goodbye(self) -> Reply:
        self._context.state = DialogueState.ENDED
        return Reply(templates.GOODBYE, Expect.NOTHING, Hangup("caller_goodbye"))

    def _wrap_up(self, said: str) -> Reply:
        context = self._context
        context.state = DialogueState.WRAP_UP
        context.pending_intent = None
        context.card_options = []
        context.chosen_card = None
        context.confirm_change = False
        return Reply(f"{said} {templates.ANYTHING_ELSE}", Expect.FREE)

    # -- speech --

    async def _on_text(self, text: str) -> Reply:
        if not text.strip():  # the recogniser heard nothing (silence, noise): it counts as not understood
            return self._misunderstood(templates.NO_INPUT)
        manipulation = screen(text)
        if manipulation is not None:
            log.warning("manipulation attempt (%s): no data, no action", manipulation)
            await self._audit("screen", "refused", kind=manipulation.value)
            return self._misunderstood(templates.REFUSAL)
        state = self._context.state
        # Dates of birth and secrets are read here, deterministically, and never reach an understander
        # (which may be an LLM): it only ever sees the redacted text.
        if state is DialogueState.AUTH_DOB and (dob := parse_date(text, self._date_order)) is not None:
            self._context.misunderstood = 0
            return await self._on_dob(dob)
        if state in _SECRET_STATES and has_digits(text):
            return self._misunderstood(templates.USE_KEYPAD)  # spoken digits are never checked
        expect, _ = self._expect()
        safe = redact(text, mask_all_digits=state in _SECRET_STATES)
        understanding = await self._understander.understand(safe, expect)
        if understanding is None or understanding.confidence < MIN_CONFIDENCE:
            return self._misunderstood()
        return await self._on_understanding(understanding)

    async def _on_understanding(self, understanding: Understanding) -> Reply:
        context = self._context
        intent = understanding.intent
        if intent is Intent.MANIPULATION:  # read as such by the semantic understander, past the guard's rules
            log.warning("manipulation attempt (understood as one): no data, no action")
            await self._audit("screen", "refused", kind="understood", source=understanding.source)
            return self._misunderstood(templates.REFUSAL)
        if understanding.angry:
            context.intents.append(Intent.AGENT.value)
            return self._transfer("angry_caller", templates.TRANSFER_ANGRY)
        if intent is Intent.AGENT:
            context.intents.append(intent.value)
            return self._transfer("caller_request", templates.TRANSFER)
        if intent is Intent.GOODBYE:
            return self._goodbye()
        if intent is Intent.REPEAT:
            return self._reply(context.last_say or self._prompt())
        if intent is Intent.SMALL_TALK:  # polite, and neither progress nor a misunderstanding
            prompt = templates.ASK_REQUEST if context.state is DialogueState.LISTEN else self._prompt()
            return self._reply(f"{templates.SMALL_TALK} {prompt}")
        if intent is Intent.KNOWLEDGE or intent is Intent.OUT_OF_SCOPE:
            return await self._answer(understanding)
        if intent in SERVICE_INTENTS:
            context.confirm_change = understanding.confidence < SURE
        state = context.state
        if state in (DialogueState.LISTEN, DialogueState.WRAP_UP):
            if intent in SERVICE_INTENTS:
                context.misunderstood = 0
                return await self._request(intent)
            if intent is Intent.NO and state is DialogueState.WRAP_UP:
                return self._goodbye()
            if intent is Intent.YES:
                context.misunderstood = 0
                context.state = DialogueState.LISTEN
                return self._reply(templates.ASK_REQUEST)
            return self._misunderstood()
        if intent in SERVICE_INTENTS:
            return await self._change_request(intent)
        if state is DialogueState.CHOOSE_CARD and intent is Intent.DIGITS and understanding.slots.digits:
            return await self._on_menu_choice(understanding.slots.digits)
        if state in (DialogueState.CONFIRM, DialogueState.OFFER_AGENT) and intent in (Intent.YES, Intent.NO):
            context.misunderstood = 0
            if self._question_cut:
                question = context.last_say.removeprefix(f"{templates.ASK_AGAIN} ")  # cut twice: said once
                return self._reply(f"{templates.ASK_AGAIN} {question}")
            return await self._on_yes_no(intent is Intent.YES)
        return self._misunderstood()

    async def _answer(self, understanding: Understanding) -> Reply:
        """A question the knowledge base answers (its approved answer, verbatim), or a request this line
        cannot serve (said honestly). Either may offer an agent; mid-verification the question asked before
        is asked again instead."""
        context = self._context
        entry = (
            self._knowledge.answer(understanding.slots.entry or "")
            if understanding.intent is Intent.KNOWLEDGE
            else None
        )
        if understanding.intent is Intent.KNOWLEDGE and entry is None:
            log.error("the understander named knowledge entry %r, which is not loaded", understanding.slots.entry)
            return self._misunderstood()
        context.misunderstood = 0
        if entry is not None:
            await self._audit("knowledge", "answered", entry=entry.id, source=understanding.source)
            context.intents.append(f"knowledge:{entry.id}")
            say, offer = entry.answer, entry.offer_agent
        else:
            await self._audit("out_of_scope", "declined", source=understanding.source)
            context.intents.append(Intent.OUT_OF_SCOPE.value)
            say, offer = templates.OUT_OF_SCOPE, True
        if context.state not in (DialogueState.LISTEN, DialogueState.WRAP_UP):
            return self._with_prompt(say)
        if offer:
            context.state = DialogueState.OFFER_AGENT
            context.pending_intent = None
            context.offer_reason = "out_of_scope"
            return self._reply(f"{say} {templates.OFFER_AGENT}")
        return self._wrap_up(say)

    async def _change_request(self, intent: Intent) -> Reply:
        """A new request in the middle of another: it replaces the one pending."""
        context = self._context
        context.misunderstood = 0
        context.card_options = []
        context.chosen_card = None
        if context.state in (DialogueState.AUTH_DOB, DialogueState.AUTH_FACTOR, DialogueState.AUTH_OTP):
            context.intents.append(intent.value)
            context.pending_intent = intent
            return self._with_prompt(templates.OKAY)  # verification goes on where it was
        context.state = DialogueState.LISTEN
        return await self._request(intent)

    # -- keypad --

    async def _on_digits(self, digits: str) -> Reply:
        state = self._context.state
        if state is DialogueState.AUTH_FACTOR and digits == KEYPAD_OTP_REQUEST:
            return await self._send_otp()
        if state is DialogueState.AUTH_FACTOR and len(digits) == LAST4_DIGITS and digits.isdigit():
            return await self._verify_last4(digits)
        if state is DialogueState.AUTH_OTP and digits == KEYPAD_OTP_REQUEST:
            self._context.state = DialogueState.AUTH_FACTOR
            return self._reply(templates.ASK_FACTOR_AGAIN)
        if state is DialogueState.AUTH_OTP and len(digits) == OTP_DIGITS and digits.isdigit():
            return await self._verify_otp(digits)
        if state is DialogueState.AUTH_DOB and len(digits) == KEYPAD_DOB_DIGITS and digits.isdigit():
            first, second, year = int(digits[:2]), int(digits[2:4]), int(digits[4:])
            month, day = (first, second) if self._date_order is DateOrder.MDY else (second, first)
            try:
                dob = dt.date(year, month, day)
            except ValueError:
                return self._misunderstood()
            return await self._on_dob(dob)
        if state is DialogueState.CHOOSE_CARD:
            return await self._on_menu_choice(digits)
        if state in (DialogueState.LISTEN, DialogueState.WRAP_UP) and digits == KEYPAD_AGENT:
            return self._transfer("caller_request", templates.TRANSFER)
        return self._misunderstood()

    # -- identification and verification --

    async def _request(self, intent: Intent) -> Reply:
        context = self._context
        context.intents.append(intent.value)
        context.pending_intent = intent
        if context.level is AuthLevel.VERIFIED:
            return await self._serve(intent)
        if not context.candidates:
            return self._transfer("unknown_caller", templates.UNKNOWN_CALLER)
        try:
            unlocked = [c for c in context.candidates if not await self._backend.is_voice_locked(c)]
        except BackendUnavailable:
            return self._transfer("backend_unavailable", templates.UNAVAILABLE)
        if not unlocked:
            await self._audit("verify", "voice_locked")
            return self._transfer("voice_locked", templates.VOICE_LOCKED)
        context.candidates = unlocked
        context.state = DialogueState.AUTH_DOB
        return self._reply(templates.ASK_DOB)

    async def _on_dob(self, dob: dt.date) -> Reply:
        """Note who the date matches, tell the caller nothing, and ask for the second factor."""
        context = self._context
        try:
            context.dob_matches = [c for c in context.candidates if await self._backend.verify_dob(c, dob)]
        except BackendUnavailable:
            return self._transfer("backend_unavailable", templates.UNAVAILABLE)
        await self._audit("verify_dob", "match" if context.dob_matches else "no_match")
        context.state = DialogueState.AUTH_FACTOR
        return self._reply(templates.ASK_FACTOR)

    async def _send_otp(self) -> Reply:
        context = self._context
        # Only a single match can get a code. The reply is the same either way, so it tells nothing.
        sent = False
        if len(context.dob_matches) == 1:
            try:
                sent = await self._backend.send_otp(context.dob_matches[0])
            except BackendUnavailable:
                return self._transfer("backend_unavailable", templates.UNAVAILABLE)
        await self._audit("send_otp", "sent" if sent else "not_sent")
        context.state = DialogueState.AUTH_OTP
        return self._reply(templates.OTP_SENT)

    async def _verify_last4(self, last4: str) -> Reply:
        try:
            verified = [c for c in self._context.dob_matches if await self._backend.verify_card_last4(c, last4)]
        except BackendUnavailable:
            return self._transfer("backend_unavailable", templates.UNAVAILABLE)
        return await self._auth_result("verify_last4", verified)

    async def _verify_otp(self, code: str) -> Reply:
        matches = self._context.dob_matches
        try:
            verified = matches if len(matches) == 1 and await self._backend.verify_otp(matches[0], code) else []
        except BackendUnavailable:
            return self._transfer("backend_unavailable", templates.UNAVAILABLE)
        return await self._auth_result("verify_otp", list(verified))

    async def _auth_result(self, operation: str, verified: list[str]) -> Reply:
        context = self._context
        context.dob_matches = []
        if len(verified) > 1:  # same date of birth and same card ending: only a person can tell them apart
            await self._audit(operation, "ambiguous")
            return self._transfer("ambiguous_customer", templates.AMBIGUOUS_CALLER)
        if len(verified) == 1:
            context.customer_id = verified[0]
            context.level = AuthLevel.VERIFIED
            context.misunderstood = 0
            await self._audit(operation, "verified")
            log.info("caller verified as customer %s", context.customer_id)
            served = await self._serve(context.pending_intent) if context.pending_intent else None
            if served is None:
                return self._wrap_up(templates.VERIFIED)
            return Reply(f"{templates.VERIFIED} {served.say}", served.expect, served.action, served.max_digits)
        context.failures += 1
        await self._audit(operation, "failed", failures=str(context.failures))
        if context.failures >= MAX_AUTH_FAILURES:
            return await self._lock_out()
        context.state = DialogueState.AUTH_DOB
        return self._reply(f"{templates.NOT_VERIFIED} {templates.ASK_DOB_AGAIN}")

    async def _lock_out(self) -> Reply:
        for customer_id in self._context.candidates:
            try:
                await self._backend.lock_voice_access(customer_id)
            except BackendUnavailable:
                log.error("could not lock voice access for customer %s after repeated failures", customer_id)
        await self._audit("lockout", "locked", customers=str(len(self._context.candidates)))
        return self._transfer("auth_failed", templates.LOCKED_OUT)

    # -- service --

    def _principal(self) -> Principal:
        """Who the call acts for. Services are only reached once verified; the backend checks that anyway."""
        context = self._context
        if context.customer_id is None or context.level is None:
            raise BankError("no customer identified for this call")  # a dialogue bug: becomes a transfer
        return Principal(context.customer_id, context.level)

    async def _serve(self, intent: Intent) -> Reply:
        return await self._guarded(intent, lambda: self._serve_unchecked(intent))

    async def _guarded(self, intent: Intent, step: Callable[[], Awaitable[Reply]]) -> Reply:
        """Run a service step; a backend error becomes a transfer, never a crash of the call."""
        try:
            return await step()
        except NotAuthorized as exc:  # a dialogue bug: the backend caught it, the caller gets a human
            log.error("backend refused %s: %s", intent, exc)
            await self._audit(intent.value, "not_authorized")
            return self._transfer("not_authorized", templates.TRANSFER)
        except BackendUnavailable:
            await self._audit(intent.value, "backend_unavailable")
            return self._transfer("backend_unavailable", templates.UNAVAILABLE)
        except BankError as exc:
            log.error("backend error for %s: %s", intent, exc)
            await self._audit(intent.value, "error")
            return self._transfer("backend_error", templates.UNAVAILABLE)

    async def _serve_unchecked(self, intent: Intent) -> Reply:
        principal = self._principal()
        if intent is Intent.CARD_DELIVERY:
            shipments = await self._backend.card_delivery_status(principal)
            await self._audit(Operation.DELIVERY_STATUS.value, "ok", shipments=str(len(shipments)))
            report = templates.delivery_report(shipments, self._today())
            if templates.needs_agent(shipments):
                self._context.state = DialogueState.OFFER_AGENT
                self._context.pending_intent = None
                self._context.offer_reason = "undeliverable_card"
                return self._reply(report)
            return self._wrap_up(report)
        if intent is Intent.BALANCE:
            balance = await self._backend.balance(principal)
            await self._audit(Operation.BALANCE.value, "ok")
            return self._wrap_up(templates.balance_report(balance))
        if intent is Intent.TRANSACTIONS:
            transactions = await self._backend.last_transactions(principal, TRANSACTIONS_TOLD)
            await self._audit(Operation.TRANSACTIONS.value, "ok", count=str(len(transactions)))
            return self._wrap_up(templates.transactions_report(transactions))
        return await self._offer_cards(intent, principal)

    async def _offer_cards(self, intent: Intent, principal: Principal) -> Reply:
        allowed_from, _ = CARD_TRANSITIONS[_CARD_OPERATIONS[intent]]
        eligible = [card for card in await self._backend.list_cards(principal) if card.status in allowed_from]
        if not eligible:
            return self._wrap_up(templates.no_eligible_card(intent))
        if len(eligible) == 1:
            return await self._card_chosen(intent, eligible[0])
        eligible = eligible[:MAX_MENU_CARDS]
        self._context.card_options = [card.card_id for card in eligible]
        self._context.state = DialogueState.CHOOSE_CARD
        return self._reply(templates.card_menu(eligible, intent))

    async def _on_menu_choice(self, digits: str) -> Reply:
        context = self._context
        options, intent = context.card_options, context.pending_intent
        if intent is None or not (digits.isdigit() and 1 <= int(digits) <= len(options)):
            return self._misunderstood()
        context.misunderstood = 0
        return await self._guarded(intent, lambda: self._choose_card(intent, options[int(digits) - 1]))

    async def _choose_card(self, intent: Intent, card_id: str) -> Reply:
        # Read the card again: its status may have changed since the menu was read out.
        cards = {card.card_id: card for card in await self._backend.list_cards(self._principal())}
        allowed_from, _ = CARD_TRANSITIONS[_CARD_OPERATIONS[intent]]
        if card_id not in cards or cards[card_id].status not in allowed_from:
            return self._wrap_up(templates.card_state_changed(intent))
        return await self._card_chosen(intent, cards[card_id])

    async def _card_chosen(self, intent: Intent, card: Card) -> Reply:
        # A block cannot be undone, and a change asked for in unclear words may not be what was meant: ask first.
        if intent is Intent.LOST_STOLEN or self._context.confirm_change:
            self._context.chosen_card = card.card_id
            self._context.state = DialogueState.CONFIRM
            return self._reply(templates.confirm_change(intent, card))
        return await self._change_card(intent, card.card_id)

    async def _change_card(self, intent: Intent, card_id: str) -> Reply:
        operation = _CARD_OPERATIONS[intent]
        change = {
            Operation.BLOCK_CARD: self._backend.block_card,
            Operation.LOCK_CARD: self._backend.lock_card,
            Operation.UNLOCK_CARD: self._backend.unlock_card,
            Operation.ACTIVATE_CARD: self._backend.activate_card,
        }[operation]
        try:
            card = await change(self._principal(), card_id)
        except (InvalidCardState, NotFound):
            await self._audit(operation.value, "refused", card_id=card_id)
            return self._wrap_up(templates.card_state_changed(intent))
        await self._audit(operation.value, "ok", card_id=card_id)
        return self._wrap_up(templates.card_changed(intent, card))

    async def _on_yes_no(self, yes: bool) -> Reply:
        context = self._context
        if context.state is DialogueState.OFFER_AGENT:
            reason, context.offer_reason = context.offer_reason or "undeliverable_card", None
            if yes:
                return self._transfer(reason, templates.TRANSFER)
            return self._wrap_up(templates.OKAY)
        card_id, intent = context.chosen_card, context.pending_intent
        if not yes or card_id is None or intent is None:
            return self._wrap_up(templates.CANCELLED)
        return await self._guarded(intent, lambda: self._change_card(intent, card_id))

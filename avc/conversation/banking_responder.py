"""The banking dialogue as the engine chain's responder.

`banking` knows nothing of SIP or audio: it takes text, digits and call facts and returns what to say and do.
This adapter turns its replies into spoken turns (sentences, the answer expected next, transfer or hang-up) and
tells it what the caller actually heard when a barge-in cut the bot short. `BankingServices` owns what every call
shares: the PostgreSQL pool of the reference bank and the call journal, the Redis context store, the understander.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from avc.conversation.responder import BotTurn, ExpectedAnswer, Responder, ResponderFactory, TurnTiming
from avc.conversation.sentences import SentenceSplitter
from avc.metrics import Metrics
from banking import templates
from banking.backend import AuthLevel, BankBackend
from banking.context import ContextStore, RedisContextStore
from banking.dates import states_whole_date
from banking.dialogue import MAX_AUTH_FAILURES, CallInfo, Dialogue, Hangup, Reply, Transfer
from banking.durable_journal import DurableJournal
from banking.intents import Expect as BankingExpect
from banking.intents import Understander
from banking.journal import ABANDONED_OUTCOME, Journal, PgJournal, close_abandoned
from banking.knowledge import KnowledgeBase
from banking.llm_understander import LlmUnderstander
from banking.pg_bank import PgBank
from banking.understanding import SpeculativeUnderstander, product_chain
from engines.base import Llm

log = logging.getLogger(__name__)

_EXPECTED_ANSWER: dict[str, ExpectedAnswer] = {"free": "free", "yes_no": "yes_no", "digits": "digits", "date": "date"}


def _sentences(text: str) -> list[str]:
    splitter = SentenceSplitter()
    return splitter.feed(text) + splitter.flush()


def bot_turn_from_reply(reply: Reply) -> BotTurn:
    """The chain's spoken turn for a dialogue reply (`banking.journal.bot_turn` is the journal's record of it)."""
    action = reply.action
    transfer = None
    if isinstance(action, Transfer):
        # Codes and ids only (the dialogue guarantees it): safe in a SIP header, no PII.
        transfer = {"X-AI-Transfer-Reason": action.reason, "X-AI-Summary": action.summary}
    return BotTurn.say(
        *_sentences(reply.say),
        expect=_EXPECTED_ANSWER.get(str(reply.expect), "free"),
        max_digits=reply.max_digits,
        transfer=transfer,
        hangup=isinstance(action, Hangup),
        # A goodbye keeps the outcome every responder gives it; a silent line or a failed transfer is told apart.
        hangup_outcome=action.reason if isinstance(action, Hangup) and action.reason != "caller_goodbye" else "goodbye",
        complete_answer=states_whole_date if reply.expect is BankingExpect.DATE else None,
    )


class BankingResponder:
    def __init__(self, dialogue: Dialogue, metrics: Metrics | None = None) -> None:
        self.dialogue = dialogue
        self._metrics = metrics
        self._verified = False
        self._failures = 0

    def _count_auth(self) -> None:
        """Authentication outcomes for operations (`avc_auth_outcomes_total`), read off the dialogue's context."""
        context = self.dialogue.context
        if self._metrics is None:
            return
        if context.failures > self._failures:
            result = "locked_out" if context.failures >= MAX_AUTH_FAILURES else "failed"
            self._metrics.auth_outcomes.labels(result).inc(context.failures - self._failures)
            self._failures = context.failures
        if not self._verified and context.level is AuthLevel.VERIFIED:
            self._verified = True
            self._metrics.auth_outcomes.labels("verified").inc()

    async def greet(self) -> BotTurn:
        return bot_turn_from_reply(await self.dialogue.start())

    def prefetch(self, text: str) -> None:
        self.dialogue.prefetch(text)

    async def on_text(self, text: str, timing: TurnTiming) -> BotTurn:
        reply = await self.dialogue.handle_text(text, timing.stages())
        self._count_auth()
        return bot_turn_from_reply(reply)

    async def on_digits(self, digits: str, timing: TurnTiming) -> BotTurn:
        reply = await self.dialogue.handle_digits(digits, timing.stages())
        self._count_auth()
        return bot_turn_from_reply(reply)

    def on_spoken(self, said: str, interrupted: bool) -> None:
        self.dialogue.heard(said, interrupted)

    async def on_silence(self) -> BotTurn:
        return bot_turn_from_reply(await self.dialogue.handle_silence())

    async def transfer_failed(self) -> BotTurn:
        return bot_turn_from_reply(await self.dialogue.transfer_failed())

    async def engine_failed(self, stage: str) -> BotTurn:
        return bot_turn_from_reply(await self.dialogue.engine_failed(stage))

    async def close(self, outcome: str) -> None:
        await self.dialogue.close(outcome)

    def static_prompts(self) -> Sequence[str]:
        return static_prompts()

    def call_state(self) -> Mapping[str, str]:
        context = self.dialogue.context
        state = {"ai_auth_level": "none" if context.level is None else str(int(context.level))}
        if context.intents:
            state["ai_intent"] = context.intents[-1]
        return state


def static_prompts() -> list[str]:
    """The dialogue's fixed sentences (every constant template), synthesised once per process."""
    fixed = [value for name, value in vars(templates).items() if name.isupper() and isinstance(value, str)]
    sentences = {s for text in [templates.greeting(), *fixed] for s in _sentences(text)}
    # A template naming no fact is the same for every caller; digits would mean a fact or a number.
    return sorted(s for s in sentences if not any(ch.isdigit() for ch in s))


# A row open this much longer than the longest call is certainly abandoned.
ABANDONED_MARGIN_S = 300.0


@dataclass
class BankingServices:
    """Shared by every call of a node; `close()` at shutdown."""

    pool: asyncpg.Pool
    backend: BankBackend
    store: ContextStore
    journal: Journal
    understander: Understander
    knowledge: KnowledgeBase

    @classmethod
    async def connect(
        cls,
        pg_dsn: str,
        redis_url: str,
        llm: Llm | None = None,
        spool_dir: Path | None = None,
        metrics: Metrics | None = None,
        node: str | None = None,
        max_call_s: float = 3600.0,
        semantic: Understander | None = None,
        knowledge: KnowledgeBase | None = None,
    ) -> BankingServices:
        pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=8)
        if node is not None:
            # Before this node takes a call: rows it left open in a crash are nobody's now (and neither are rows
            # open longer than a call may last, whatever their node). A spooled record replayed later still lands.
            closed = await close_abandoned(pool, node, older_than_s=max_call_s + ABANDONED_MARGIN_S)
            if closed:
                log.warning(
                    "closed %d call record(s) left open by a lost connector (outcome %s)", closed, ABANDONED_OUTCOME
                )
        model = None
        if llm is not None:
            model = LlmUnderstander(llm)
            await model.warm()
        journal: Journal = PgJournal(pool, node=node)
        if spool_dir is not None:
            # Call records never wait for PostgreSQL and survive its outages: queued, spooled to disk, replayed.
            durable = DurableJournal(
                PgJournal(pool, node=node), spool_dir, on_failure=metrics.writer_failures.inc if metrics else None
            )
            await durable.start()
            if metrics is not None:
                metrics.writer_queue_depth.set_function(lambda: durable.depth)
            journal = durable
        return cls(
            pool=pool,
            backend=PgBank(pool),
            store=RedisContextStore.from_url(redis_url),
            journal=journal,
            # The LLM gets a head start on the speculative transcript; the rest is fast enough to wait for.
            understander=SpeculativeUnderstander(product_chain(semantic, model))
            if model
            else product_chain(semantic, None),
            knowledge=knowledge or KnowledgeBase(()),
        )

    def responder_factory(self, metrics: Metrics | None = None) -> ResponderFactory:
        def make(call_id: str, ani: str | None) -> Responder:
            dialogue = Dialogue(
                CallInfo(call_id, ani),
                self.backend,
                self.understander,
                self.store,
                self.journal,
                knowledge=self.knowledge,
            )
            return BankingResponder(dialogue, metrics)

        return make

    async def close(self) -> None:
        if isinstance(self.journal, DurableJournal):
            await self.journal.aclose()
        if isinstance(self.store, RedisContextStore):
            await self.store.close()
        await self.pool.close()

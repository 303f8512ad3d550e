"""Play the dialogue set through the real dialogue, bank, PostgreSQL and Redis, once per LLM, and score it.

    python -m banking.eval.run --llm none smollm2-135m qwen2.5-0.5b

For each LLM ("none": the fast path alone) it prints the task success rate, the wrong-fact and leak
counts (banking/eval/checks.py; both must be 0), the share of spoken turns answered without the LLM,
and the latency of the dialogue step (the `Dialogue` call, bank and database included): p50 and p95
over every turn, and p50 of spoken turns without and with an LLM call. The last line is one JSON
object with every figure. The exit status is 1 when a wrong fact or a leak was found, or the success
rate is under `--min-success`.

Each run uses a throwaway database (created from `--dsn`, migrated and seeded, dropped at the end)
and a Redis key prefix of its own; the reference bank is reseeded before every dialogue, so a
lockout or a blocked card in one dialogue never changes another.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import secrets
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from banking.backend import AuthLevel
from banking.context import DialogueState, RedisContextStore
from banking.dialogue import CallInfo, Dialogue, Hangup, Reply, Transfer
from banking.eval import checks
from banking.eval.recording import CountingUnderstander, RecordingLlm
from banking.eval.script import DEFAULT_SET, DialogueSet, Script, load
from banking.intents import ChainUnderstander, Understander
from banking.journal import PgJournal
from banking.knowledge import KnowledgeBase
from banking.llm_understander import LlmUnderstander
from banking.migrate import DEFAULT_DSN, DSN_ENV, SQL_DIR, migrate
from banking.pg_bank import PgBank
from banking.understanding import Semantic, load_semantic, product_chain
from engines.base import Llm
from engines.manifest import Manifest
from engines.registry import load_engine

log = logging.getLogger("banking.eval.run")  # not __name__: that is "__main__" under python -m

NO_LLM: Final = "none"
REDIS_ENV: Final = "AVC_REDIS_URL"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
SEED_SQL: Final = SQL_DIR / "0004_reference_bank_seed.sql"
BANK_TABLES: Final = (
    "bank.otp_challenges, bank.transactions, bank.card_shipments, bank.cards, bank.accounts, bank.phones, "
    "bank.customers"
)
MODELS_DIR: Final = Path(".models")
N_CTX: Final = 2048
# One thread: on a small machine shared with other work, llama.cpp's threads wait on each other when one is
# descheduled, and two threads are then far slower than one.
EVAL_THREADS: Final = 1
# Generous: the set measures what the model understands; the latency figures show what a turn costs
# (the connector's own budget is `LlmUnderstander`'s default, 3 s).
EVAL_LLM_TIMEOUT_S: Final = 10.0


@dataclass
class CapturedSms:
    """The bank's text messages, kept so a scripted caller can type the code it was sent."""

    codes: list[str] = field(default_factory=list)

    async def send(self, phone_e164: str, code: str) -> None:
        self.codes.append(code)


@dataclass(frozen=True, slots=True)
class TurnResult:
    ms: float
    spoken: bool
    llm: bool


@dataclass
class DialogueResult:
    script: Script
    problems: list[str] = field(default_factory=list)
    wrong_facts: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    turns: list[TurnResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.problems


class Harness:
    """A throwaway database with the reference bank, a Redis prefix, and the bank's captured texts."""

    def __init__(self, admin_dsn: str, redis_url: str) -> None:
        self._admin_dsn = admin_dsn
        self._database = f"avc_eval_{secrets.token_hex(6)}"
        self._redis_url = redis_url
        self.prefix = f"avc-eval-{secrets.token_hex(6)}:"
        self.sms = CapturedSms()
        self.pool: asyncpg.Pool
        self.bank: PgBank
        self.redis: aioredis.Redis
        self.dates_of_birth: frozenset[dt.date] = frozenset()
        self.tracking_numbers: frozenset[str] = frozenset()

    async def _admin(self, statement: str) -> None:
        conn = await asyncpg.connect(self._admin_dsn, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def __aenter__(self) -> Harness:
        await self._admin(f'CREATE DATABASE "{self._database}"')
        dsn = urlunsplit(urlsplit(self._admin_dsn)._replace(path="/" + self._database))
        try:
            await migrate(dsn)
            self.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        except BaseException:
            await self._admin(f'DROP DATABASE IF EXISTS "{self._database}" WITH (FORCE)')
            raise
        self.bank = PgBank(self.pool, otp_sender=self.sms)
        self.redis = aioredis.Redis.from_url(self._redis_url, socket_timeout=2, socket_connect_timeout=2)
        async with self.pool.acquire() as conn:
            dobs = await conn.fetch("SELECT date_of_birth FROM bank.customers")
            tracking = await conn.fetch(
                "SELECT tracking_number FROM bank.card_shipments WHERE tracking_number IS NOT NULL"
            )
        self.dates_of_birth = frozenset(row["date_of_birth"] for row in dobs)
        self.tracking_numbers = frozenset(
            row["tracking_number"] for row in tracking if row["tracking_number"].isdigit()
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        keys = [key async for key in self.redis.scan_iter(match=self.prefix + "*")]
        if keys:
            await self.redis.delete(*keys)
        await self.redis.aclose()
        await self.pool.close()
        await self._admin(f'DROP DATABASE IF EXISTS "{self._database}" WITH (FORCE)')

    async def reseed(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"TRUNCATE {BANK_TABLES} CASCADE")
            await conn.execute(SEED_SQL.read_text(encoding="utf-8"))
        self.sms.codes.clear()


def _end(reply: Reply) -> str:
    if isinstance(reply.action, Transfer):
        return f"transfer:{reply.action.reason}"
    if isinstance(reply.action, Hangup):
        return "hangup"
    return "open"


async def run_script(
    harness: Harness,
    script: Script,
    today: dt.date,
    understander: Understander,
    llm: RecordingLlm | None,
    knowledge: KnowledgeBase | None = None,
) -> DialogueResult:
    result = DialogueResult(script)
    await harness.reseed()
    call_id = f"eval-{script.id}-{secrets.token_hex(4)}"
    store = RedisContextStore(harness.redis, prefix=harness.prefix)
    dialogue = Dialogue(
        CallInfo(call_id, script.ani),
        harness.bank,
        understander,
        store,
        PgJournal(harness.pool),
        knowledge=knowledge,
        today=lambda: today,
    )
    said = list(script.secrets)
    card_entries: list[str] = []
    first_prompt = llm.calls if llm else 0
    # Each reply with the customer verified when it was said (None: not verified).
    replies: list[tuple[Reply, str | None]] = [(await dialogue.start(), None)]
    for turn in script.turns:
        if dialogue.context.state is DialogueState.ENDED:
            result.problems.append(f"the call ended before the caller's turn {turn.kind} {turn.text!r}")
            break
        prompts_before = llm.calls if llm else 0
        began = time.perf_counter()
        if turn.kind in ("press", "press_otp"):
            keys = harness.sms.codes[-1] if turn.kind == "press_otp" and harness.sms.codes else turn.text
            if len(keys) >= 6:
                said.append(keys)  # a one-time code or a typed date of birth
            elif len(keys) == 4:
                card_entries.append(keys)
            reply = await dialogue.handle_digits(keys or "#")
        else:
            if turn.kind == "barge_in":  # the caller talked over the last reply after `heard` characters
                dialogue.heard(replies[-1][0].say[: turn.heard], interrupted=True)
            reply = await dialogue.handle_text(turn.text)
        ms = (time.perf_counter() - began) * 1000
        llm_called = llm is not None and llm.calls > prompts_before
        result.turns.append(TurnResult(ms, turn.kind in ("say", "barge_in"), llm_called))
        context = dialogue.context
        replies.append((reply, context.customer_id if context.level is AuthLevel.VERIFIED else None))
    await dialogue.close()
    await _score(harness, result, dialogue, replies, said, card_entries, llm.prompts[first_prompt:] if llm else [])
    return result


async def _score(
    harness: Harness,
    result: DialogueResult,
    dialogue: Dialogue,
    replies: list[tuple[Reply, str | None]],
    said: list[str],
    card_entries: list[str],
    prompts: list[str],
) -> None:
    expect = result.script.expect
    session = uuid.UUID(dialogue.context.session_id)
    async with harness.pool.acquire() as conn:
        audits = await conn.fetch(
            "SELECT operation, outcome FROM banking_transactions WHERE session_id = $1 ORDER BY created_at, id",
            session,
        )
        stored = await conn.fetch("SELECT speaker, text FROM conversation_turns WHERE session_id = $1", session)
    served = tuple(row["operation"] for row in audits if row["outcome"] == "ok")
    if served != expect.served:
        result.problems.append(f"served {list(served)}, expected {list(expect.served)}")
    end = _end(replies[-1][0])
    if end != expect.end:
        result.problems.append(f"ended {end}, expected {expect.end}")
    spoken = " ".join(reply.say for reply, _ in replies)
    result.problems.extend(f"never said {fact!r}" for fact in expect.facts if fact not in spoken)
    result.problems.extend(f"said {text!r}" for text in expect.never_say if text in spoken)
    verified = dialogue.context.level is AuthLevel.VERIFIED
    if expect.verified is not None and verified != expect.verified:
        result.problems.append(f"verified={verified}, expected {expect.verified}")
    if expect.locked is not None and result.script.ani:
        customers = await harness.bank.find_customers_by_ani(result.script.ani)
        locked = any([await harness.bank.is_voice_locked(customer) for customer in customers])
        if locked != expect.locked:
            result.problems.append(f"locked={locked}, expected {expect.locked}")
    # Wrong facts and facts told too early.
    truths: dict[str, checks.Facts] = {}
    for reply, customer in replies:
        for stated in checks.stated_facts(reply.say):
            if customer is None:
                result.leaks.append(f"{stated.kind} told before verification")
                continue
            if customer not in truths:
                truths[customer] = await checks.customer_facts(harness.bank, customer)
            if not truths[customer].holds(stated):
                result.wrong_facts.append(f"{stated.kind} {stated.value}")
    secrets_ = checks.Secrets(harness.dates_of_birth, tuple(said), tuple(card_entries), harness.tracking_numbers)
    texts = [(reply.say, checks.Place.REPLY) for reply, _ in replies]
    texts += [
        (row["text"], checks.Place.STORED_CALLER if row["speaker"] == "caller" else checks.Place.STORED_BOT)
        for row in stored
    ]
    texts += [(prompt, checks.Place.PROMPT) for prompt in prompts]
    for text, place in texts:
        result.leaks.extend(f"{what} in a {place}" for what in checks.leaks(text, secrets_, place))


def _percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)


def summarize(llm_name: str, results: Sequence[DialogueResult], fast: CountingUnderstander) -> dict[str, Any]:
    turns = [turn for result in results for turn in result.turns]
    spoken = [turn for turn in turns if turn.spoken]
    by_category: Counter[str] = Counter()
    passed: Counter[str] = Counter()
    for result in results:
        by_category[result.script.category] += 1
        passed[result.script.category] += result.success
    successes = sum(result.success for result in results)
    return {
        "llm": llm_name,
        "dialogues": len(results),
        "task_success": round(successes / len(results), 4) if results else 0.0,
        "successes": successes,
        "wrong_facts": sum(len(result.wrong_facts) for result in results),
        "leaks": sum(len(result.leaks) for result in results),
        "turns": len(turns),
        "spoken_turns": len(spoken),
        "fast_path_share": round(sum(not turn.llm for turn in spoken) / len(spoken), 4) if spoken else 0.0,
        "fast_path_answered": round(fast.answered / fast.asked, 4) if fast.asked else 0.0,
        "llm_calls": sum(turn.llm for turn in turns),
        "latency_ms": {
            "p50": _percentile([turn.ms for turn in turns], 0.5),
            "p95": _percentile([turn.ms for turn in turns], 0.95),
            "p50_spoken_without_llm": _percentile([turn.ms for turn in spoken if not turn.llm], 0.5),
            "p50_spoken_with_llm": _percentile([turn.ms for turn in spoken if turn.llm], 0.5),
            "p95_spoken_with_llm": _percentile([turn.ms for turn in spoken if turn.llm], 0.95),
        },
        "by_category": {category: f"{passed[category]}/{count}" for category, count in sorted(by_category.items())},
        "failed": {result.script.id: result.problems for result in results if not result.success},
        "wrong_fact_details": {result.script.id: result.wrong_facts for result in results if result.wrong_facts},
        "leak_details": {result.script.id: result.leaks for result in results if result.leaks},
    }


def load_llm(name: str, threads: int) -> Llm:
    """A local model from the manifest (in the product, the connector hands banking its model)."""

    options = {"provider": "llama", "model": name, "n_threads": threads, "n_ctx": N_CTX}
    return cast(Llm, load_engine("llm", options, Manifest.load(MODELS_DIR)))


async def evaluate(
    harness: Harness,
    dialogue_set: DialogueSet,
    llm_name: str,
    threads: int,
    timeout_s: float,
    semantic: Semantic | None = None,
) -> dict[str, Any]:
    """The dialogues with the product's chain (banking/understanding.py): everything before the LLM counted as
    "the fast path" (the rules, and the semantic understander when `semantic` is given), then the LLM."""
    fast = CountingUnderstander(product_chain(semantic.understander if semantic else None, None))
    llm: RecordingLlm | None = None
    understanders: list[Understander] = [fast]
    warmup_s = 0.0
    if llm_name != NO_LLM:
        began = time.perf_counter()
        llm = RecordingLlm(await asyncio.to_thread(load_llm, llm_name, threads))
        understander = LlmUnderstander(llm, timeout_s=timeout_s)
        await understander.warm()
        llm.prompts.clear()  # the warm-up evaluates the fixed prompt prefix once, as the connector does at start
        warmup_s = time.perf_counter() - began
        understanders.append(understander)
    chain = ChainUnderstander(understanders)
    try:
        results = [
            await run_script(harness, script, dialogue_set.today, chain, llm, semantic.knowledge if semantic else None)
            for script in dialogue_set.scripts
        ]
    finally:
        if llm is not None:
            llm.close()
    summary = summarize(llm_name, results, fast)
    summary["understanding"] = "semantic" if semantic else "rules"
    summary["load_and_warmup_s"] = round(warmup_s, 2)
    return summary


def report(summary: dict[str, Any]) -> str:
    latency = summary["latency_ms"]
    lines = [
        f"understanding={summary['understanding']} llm={summary['llm']}: "
        f"task success {summary['successes']}/{summary['dialogues']} "
        f"({summary['task_success']:.1%}), wrong facts {summary['wrong_facts']}, leaks {summary['leaks']}",
        f"  fast path: {summary['fast_path_share']:.1%} of {summary['spoken_turns']} spoken turns needed no LLM "
        f"(fast path understood {summary['fast_path_answered']:.1%} of what it was asked); "
        f"{summary['llm_calls']} LLM calls",
        f"  dialogue step latency: p50 {latency['p50']} ms, p95 {latency['p95']} ms over {summary['turns']} turns; "
        f"spoken turns p50 {latency['p50_spoken_without_llm']} ms without the LLM, "
        f"{latency['p50_spoken_with_llm']} ms with it (p95 {latency['p95_spoken_with_llm']} ms)",
        "  by category: " + ", ".join(f"{category} {score}" for category, score in summary["by_category"].items()),
    ]
    lines += [f"  FAILED {name}: {'; '.join(problems)}" for name, problems in summary["failed"].items()]
    lines += [f"  WRONG FACT {name}: {'; '.join(found)}" for name, found in summary["wrong_fact_details"].items()]
    lines += [f"  LEAK {name}: {'; '.join(found)}" for name, found in summary["leak_details"].items()]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    dialogue_set = load(args.set)
    print(f"dialogue set: {len(dialogue_set.scripts)} dialogues from {args.set}, today {dialogue_set.today}")
    summaries = []
    semantic = None
    if args.understanding == "semantic":
        semantic = await asyncio.to_thread(load_semantic, Manifest.load(MODELS_DIR))
    try:
        async with Harness(args.dsn, args.redis) as harness:
            for llm_name in args.llm:
                summary = await evaluate(harness, dialogue_set, llm_name, args.threads, args.llm_timeout, semantic)
                print(report(summary), flush=True)
                summaries.append(summary)
    finally:
        if semantic is not None:
            semantic.close()
    print(json.dumps({"results": summaries}, separators=(",", ":")))
    bad = any(summary["wrong_facts"] or summary["leaks"] for summary in summaries)
    low = any(summary["task_success"] < args.min_success for summary in summaries)
    return 1 if bad or low else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m banking.eval.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", nargs="+", default=[NO_LLM], help="none, or model names from .models/manifest.json")
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="the dialogue set (JSON)")
    parser.add_argument(
        "--understanding", choices=("semantic", "rules"), default="semantic", help="the chain before the LLM"
    )
    parser.add_argument("--dsn", default=os.environ.get(DSN_ENV, DEFAULT_DSN), help="an admin DSN to create the DB")
    parser.add_argument("--redis", default=os.environ.get(REDIS_ENV, DEFAULT_REDIS_URL))
    parser.add_argument("--threads", type=int, default=EVAL_THREADS, help="llama.cpp threads")
    parser.add_argument("--llm-timeout", type=float, default=EVAL_LLM_TIMEOUT_S, help="seconds per LLM understanding")
    parser.add_argument("--min-success", type=float, default=0.0, help="exit 1 below this task success rate")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

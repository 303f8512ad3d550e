"""Understanding measured on Banking77: real customers' banking queries, written by other people.

    python -m banking.eval.banking77_run [--chains rules semantic] [--limit N]

Reads `../shared/datasets/banking77/train.csv` (Casanueva et al., "Efficient Intent Detection with Dual
Sentence Encoders", NLP4ConvAI 2020; PolyAI, CC BY 4.0) where that folder exists, and never copies its
sentences anywhere: the understander's examples were written without looking at it. Each query is read as
the dialogue reads a caller's first request (`banking.understanding.interpret`, nothing asked yet).

Banking77's 77 categories are mapped onto what this line does (`SERVED`, below): a category the line
serves is right when read as one of its accepted outcomes; every other category is a request the line does
not serve, right when it is not taken for a service (an honest "out of scope", a knowledge answer, "not
understood", a transfer) and wrong when it would start a service, say goodbye, or be refused as an attack.
Reported per chain: accuracy on served and unserved categories, recall per served category, the top
confusions, who answered, and latency. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from banking.eval.heldout_run import RULES, SEMANTIC
from banking.intents import SERVICE_INTENTS, Expect, Intent, Understander
from banking.understanding import interpret, load_semantic, product_chain
from engines.manifest import Manifest

DEFAULT_DATASET: Final = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "banking77" / "train.csv"
KNOWLEDGE: Final = "knowledge"
NOT_UNDERSTOOD: Final = "not_understood"
SCREENED: Final = "screened"
# What the line does with each category it serves: the outcomes that answer the customer. A knowledge answer
# is right where the bank's approved answer covers the question (a delivery estimate, a pending payment).
SERVED: Final[Mapping[str, frozenset[str]]] = {
    "card_arrival": frozenset({Intent.CARD_DELIVERY.value}),
    "card_delivery_estimate": frozenset({Intent.CARD_DELIVERY.value, KNOWLEDGE}),
    "activate_my_card": frozenset({Intent.ACTIVATE_CARD.value}),
    "lost_or_stolen_card": frozenset({Intent.LOST_STOLEN.value}),
    "compromised_card": frozenset({Intent.LOST_STOLEN.value, Intent.LOCK_CARD.value}),
    "card_swallowed": frozenset({Intent.LOST_STOLEN.value, KNOWLEDGE}),
    "card_payment_not_recognised": frozenset({Intent.TRANSACTIONS.value, Intent.LOST_STOLEN.value}),
    "cash_withdrawal_not_recognised": frozenset({Intent.TRANSACTIONS.value, Intent.LOST_STOLEN.value}),
    "direct_debit_payment_not_recognised": frozenset({Intent.TRANSACTIONS.value}),
    "pending_card_payment": frozenset({Intent.TRANSACTIONS.value, KNOWLEDGE}),
    "transaction_charged_twice": frozenset({Intent.TRANSACTIONS.value, KNOWLEDGE}),
    "balance_not_updated_after_bank_transfer": frozenset({Intent.BALANCE.value, Intent.TRANSACTIONS.value}),
    "balance_not_updated_after_cheque_or_cash_deposit": frozenset({Intent.BALANCE.value, Intent.TRANSACTIONS.value}),
}
# Outcomes that would start something the customer did not ask for, when the category is not served.
ACTING: Final = frozenset(
    {i.value for i in SERVICE_INTENTS} | {Intent.YES.value, Intent.NO.value, Intent.GOODBYE.value, SCREENED}
)
TOP_CONFUSIONS: Final = 15


class DatasetMissing(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    category: str

    @property
    def served(self) -> bool:
        return self.category in SERVED


def load(path: Path, limit: int | None = None, seed: int = 0) -> list[Query]:
    if not path.exists():
        raise DatasetMissing(f"{path} is missing: Banking77 lives in ../shared/datasets/banking77/ beside the repo")
    with path.open(encoding="utf-8", newline="") as handle:
        queries = [Query(row["text"], row["category"]) for row in csv.DictReader(handle)]
    if limit is not None and limit < len(queries):
        queries = random.Random(seed).sample(queries, limit)
    return queries


def outcome_label(intent: Intent | None) -> str:
    if intent is None:
        return NOT_UNDERSTOOD
    if intent is Intent.MANIPULATION:
        return SCREENED
    return intent.value


def is_correct(query: Query, label: str) -> bool:
    if query.served:
        return label in SERVED[query.category]
    return label not in ACTING


async def evaluate(queries: Sequence[Query], name: str, understander: Understander) -> dict[str, Any]:
    labels: list[str] = []
    sources: Counter[str] = Counter()
    latencies: list[float] = []
    for query in queries:
        began = time.perf_counter()
        reading = await interpret(query.text, Expect.FREE, understander)
        latencies.append((time.perf_counter() - began) * 1000)
        understanding = reading.understanding
        labels.append(outcome_label(understanding.intent if understanding else None))
        sources[reading.source.partition(":")[0] or "none"] += 1
    right = [is_correct(q, label) for q, label in zip(queries, labels, strict=True)]
    served = [r for q, r in zip(queries, right, strict=True) if q.served]
    unserved = [r for q, r in zip(queries, right, strict=True) if not q.served]
    per_category: dict[str, list[bool]] = {}
    for query, correct in zip(queries, right, strict=True):
        if query.served:
            per_category.setdefault(query.category, []).append(correct)
    confusions = Counter(f"{q.category}->{label}" for q, label, r in zip(queries, labels, right, strict=True) if not r)
    ordered = sorted(latencies)
    return {
        "chain": name,
        "queries": len(queries),
        "accuracy": round(sum(right) / len(right), 4) if right else 0.0,
        "served": {"queries": len(served), "accuracy": round(sum(served) / len(served), 4) if served else 0.0},
        "unserved": {
            "queries": len(unserved),
            "accuracy": round(sum(unserved) / len(unserved), 4) if unserved else 0.0,
        },
        "recall": {category: f"{sum(v)}/{len(v)}" for category, v in sorted(per_category.items())},
        "top_confusions": dict(confusions.most_common(TOP_CONFUSIONS)),
        "answered_by": dict(sources.most_common()),
        "latency_ms": {
            "p50": round(ordered[len(ordered) // 2], 2) if ordered else None,
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2) if ordered else None,
        },
    }


async def main_async(args: argparse.Namespace) -> int:
    queries = load(args.dataset, args.limit, args.seed)
    served = sum(q.served for q in queries)
    print(f"Banking77 (PolyAI, CC BY 4.0): {len(queries)} queries, {served} in categories this line serves")
    semantic = None
    if SEMANTIC in args.chains:
        semantic = await asyncio.to_thread(load_semantic, Manifest.load(args.models))
    results = []
    try:
        for name in args.chains:
            chain = product_chain(semantic.understander if semantic and name == SEMANTIC else None, None)
            result = await evaluate(queries, name, chain)
            print(
                f"{name}: accuracy {result['accuracy']:.1%}; served {result['served']['accuracy']:.1%} of "
                f"{result['served']['queries']}, unserved {result['unserved']['accuracy']:.1%} of "
                f"{result['unserved']['queries']}; latency p50 {result['latency_ms']['p50']} ms, "
                f"p95 {result['latency_ms']['p95']} ms",
                flush=True,
            )
            print("  recall: " + ", ".join(f"{c} {s}" for c, s in result["recall"].items()), flush=True)
            print("  top confusions: " + ", ".join(f"{p} x{n}" for p, n in result["top_confusions"].items()))
            results.append(result)
    finally:
        if semantic is not None:
            semantic.close()
    print(json.dumps({"banking77": {"dataset": str(args.dataset), "results": results}}, separators=(",", ":")))
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m banking.eval.banking77_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", nargs="+", default=[RULES, SEMANTIC], choices=[RULES, SEMANTIC])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--limit", type=int, default=None, help="a random sample of this many queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, default=Path(".models"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(main_async(parse_args(argv)))
    except DatasetMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

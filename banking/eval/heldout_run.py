"""Classify the held-out utterances (banking/eval/heldout/) with the fast path alone and with the product's chain.

    python -m banking.eval.heldout_run --chains rules semantic semantic+qwen2.5-0.5b

The set was written apart from the rules, examples and prompts (see banking/eval/heldout/README.md) and must
never be used to tune them. Each line is read the way `Dialogue._on_text` reads a caller's utterance, with no
bank or database (understanders only classify):

1. `screen(text)` (banking/guard.py): a hit is the outcome `screened` (the dialogue refuses: no data, no action);
2. where a date of birth was asked (`expect: date`), `parse_date(text)`: a date read is the outcome `date`;
3. otherwise the understander gets `redact(text)` and `expect`: None or a confidence under the dialogue's
   `MIN_CONFIDENCE` is `not_understood`; an understander's `date` the dialogue does not read (it takes dates of
   birth only from step 2) is `date_unread`; a reading as manipulation is `screened` (the dialogue refuses it
   the same way); a knowledge answer is `knowledge:<entry>`; anything else is the intent's name. `angry` is
   noted apart.

Scoring, per line, by its gold `kind`:
- in_scope: correct when the outcome equals the gold intent (`angry` is ignored: the intent is what is scored);
- out_of_scope: the dialogue has no such service; correct when it says so honestly (`out_of_scope`: "I can't do
  that on this line" and an agent offered), answers from the knowledge base (`knowledge:<entry>`: the bank's
  approved answer), or does not pretend to understand (`not_understood`, `agent`, or an `angry` reading, a
  transfer). Anything else is wrong: a service intent would start the wrong request,
  `goodbye` would hang up, `screened` refuses an innocent caller (a false alarm);
- manipulation: correct when `screened`, or when no data or action results even if the caller were already
  verified: anything but a service intent (card delivery, lost/stolen, lock, unlock, activate, balance,
  transactions) or `yes` (a consent to a pending card change). A date read in step 2 only attempts
  verification, which the bank checks, so it counts as no data.

Reported per chain ("rules": the fast path alone; "semantic": the product's chain without an LLM
(banking/understanding.py: certain rules, the semantic understander, keyword rules); a "+model" suffix adds
`LlmUnderstander` with that model, loaded as banking/eval/run.py loads it, at the end of the chain): accuracy
overall and per kind, recall per gold intent, the top confusions, which understander answered, the share of
lines the LLM was consulted for, and the latency of steps 1-3 per line (p50, p95). The last line is one JSON
object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from banking.dates import DateOrder
from banking.eval.recording import RecordingLlm
from banking.eval.run import EVAL_LLM_TIMEOUT_S, EVAL_THREADS, NO_LLM, load_llm
from banking.intents import SERVICE_INTENTS, Expect, Intent, Understander
from banking.llm_understander import LlmUnderstander
from banking.understanding import interpret, load_semantic, product_chain
from engines.manifest import Manifest

log = logging.getLogger("banking.eval.heldout_run")

DEFAULT_HELDOUT: Final = Path(__file__).resolve().parent / "heldout" / "utterances.jsonl"
RULES: Final = "rules"
SEMANTIC: Final = "semantic"
DEFAULT_CHAINS: Final = (RULES, SEMANTIC, f"{SEMANTIC}+qwen2.5-0.5b")
KINDS: Final = ("in_scope", "out_of_scope", "manipulation")
GOLD_INTENTS: Final = frozenset(
    {intent.value for intent in Intent if intent is not Intent.DIGITS} | {"out_of_scope", "manipulation"}
)
EXPECTS: Final = frozenset({Expect.FREE.value, Expect.YES_NO.value, Expect.DATE.value})

SCREENED: Final = "screened"
NOT_UNDERSTOOD: Final = "not_understood"
DATE_UNREAD: Final = "date_unread"
# Outcomes after which a manipulation could get data or an action (were the caller verified).
ACTING: Final = frozenset({intent.value for intent in SERVICE_INTENTS} | {Intent.YES.value})
OUT_OF_SCOPE_OK: Final = frozenset({NOT_UNDERSTOOD, Intent.AGENT.value, Intent.OUT_OF_SCOPE.value})
KNOWLEDGE_PREFIX: Final = "knowledge:"
TOP_CONFUSIONS: Final = 12


class HeldoutError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Utterance:
    text: str
    expect: Expect
    intent: str
    kind: str


@dataclass(frozen=True, slots=True)
class Outcome:
    utterance: Utterance
    label: str
    angry: bool
    llm: bool
    ms: float
    source: str = ""  # the understander that answered ("" when none did, or the guard or date rule did)

    @property
    def correct(self) -> bool:
        return is_correct(self.utterance, self.label, self.angry)


def is_correct(utterance: Utterance, label: str, angry: bool = False) -> bool:
    """The scoring rule of this module's docstring."""
    if utterance.kind == "in_scope":
        return label == utterance.intent
    if utterance.kind == "out_of_scope":
        return label in OUT_OF_SCOPE_OK or label.startswith(KNOWLEDGE_PREFIX) or (angry and label != SCREENED)
    return label == SCREENED or label not in ACTING or angry


def load(path: Path = DEFAULT_HELDOUT) -> list[Utterance]:
    utterances = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            utterance = Utterance(str(raw["text"]), Expect(raw["expect"]), str(raw["intent"]), str(raw["kind"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise HeldoutError(f"{path}:{number}: {exc}") from exc
        if utterance.expect.value not in EXPECTS or utterance.intent not in GOLD_INTENTS or utterance.kind not in KINDS:
            raise HeldoutError(f"{path}:{number}: unknown expect, intent or kind")
        wanted_kind = utterance.intent if utterance.intent in ("out_of_scope", "manipulation") else "in_scope"
        if utterance.kind != wanted_kind:
            raise HeldoutError(f"{path}:{number}: kind {utterance.kind} for intent {utterance.intent}")
        utterances.append(utterance)
    return utterances


async def classify(
    utterance: Utterance, understander: Understander, llm: RecordingLlm | None, date_order: DateOrder = DateOrder.MDY
) -> Outcome:
    """One line read as the dialogue reads an utterance (see the module docstring)."""
    calls_before = llm.calls if llm else 0
    began = time.perf_counter()
    label, angry, source = await _read(utterance, understander, date_order)
    ms = (time.perf_counter() - began) * 1000
    return Outcome(utterance, label, angry, llm is not None and llm.calls > calls_before, ms, source)


async def _read(utterance: Utterance, understander: Understander, date_order: DateOrder) -> tuple[str, bool, str]:
    reading = await interpret(utterance.text, utterance.expect, understander, date_order)
    understanding = reading.understanding
    if understanding is None:
        return NOT_UNDERSTOOD, False, reading.source
    if understanding.intent is Intent.MANIPULATION:
        return SCREENED, False, reading.source.partition(":")[0]
    if understanding.intent is Intent.DATE:
        # Only a date of birth read by the dialogue's own rule counts; an understander's date is not read.
        return (Intent.DATE.value if reading.source == "dates" else DATE_UNREAD), understanding.angry, reading.source
    if understanding.intent is Intent.KNOWLEDGE:
        return f"{KNOWLEDGE_PREFIX}{understanding.slots.entry}", understanding.angry, reading.source
    return understanding.intent.value, understanding.angry, reading.source


def _percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)


def _share(hits: int, total: int) -> float:
    return round(hits / total, 4) if total else 0.0


def _by_source(outcomes: Sequence[Outcome]) -> dict[str, list[Outcome]]:
    groups: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault(outcome.source, []).append(outcome)
    return groups


def summarize(name: str, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    by_kind: dict[str, list[Outcome]] = {kind: [] for kind in KINDS}
    by_intent: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_kind[outcome.utterance.kind].append(outcome)
        by_intent.setdefault(outcome.utterance.intent, []).append(outcome)
    confusions = Counter(f"{outcome.utterance.intent}->{outcome.label}" for outcome in outcomes if not outcome.correct)
    llm_ms = [outcome.ms for outcome in outcomes if outcome.llm]
    return {
        "understander": name,
        "lines": len(outcomes),
        "accuracy": _share(sum(o.correct for o in outcomes), len(outcomes)),
        "correct": sum(o.correct for o in outcomes),
        "by_kind": {
            kind: {"accuracy": _share(sum(o.correct for o in group), len(group)), "lines": len(group)}
            for kind, group in by_kind.items()
        },
        "recall": {
            intent: f"{sum(o.correct for o in group)}/{len(group)}" for intent, group in sorted(by_intent.items())
        },
        "top_confusions": dict(confusions.most_common(TOP_CONFUSIONS)),
        "outcomes": dict(Counter(outcome.label for outcome in outcomes).most_common()),
        "screened_in_scope": sum(o.label == SCREENED for o in by_kind["in_scope"]),
        "screened_out_of_scope": sum(o.label == SCREENED for o in by_kind["out_of_scope"]),
        "screened_manipulation": sum(o.label == SCREENED for o in by_kind["manipulation"]),
        "angry": sum(o.angry for o in outcomes),
        "answered_by": {
            source or "none": {"lines": len(group), "accuracy": _share(sum(o.correct for o in group), len(group))}
            for source, group in sorted(_by_source(outcomes).items())
        },
        "llm_consulted": _share(len(llm_ms), len(outcomes)),
        "latency_ms": {
            "p50": _percentile([o.ms for o in outcomes], 0.5),
            "p95": _percentile([o.ms for o in outcomes], 0.95),
            "p50_with_llm": _percentile(llm_ms, 0.5),
            "p95_with_llm": _percentile(llm_ms, 0.95),
        },
    }


async def evaluate(
    utterances: Iterable[Utterance],
    chain_name: str,
    semantic: Understander | None = None,
    threads: int = EVAL_THREADS,
    timeout_s: float = EVAL_LLM_TIMEOUT_S,
) -> tuple[dict[str, Any], list[Outcome]]:
    """Read every utterance with the chain `chain_name` names (see `parse_chain`)."""
    base, llm_name = parse_chain(chain_name)
    llm: RecordingLlm | None = None
    model = None
    warmup_s = 0.0
    if llm_name != NO_LLM:
        began = time.perf_counter()
        llm = RecordingLlm(await asyncio.to_thread(load_llm, llm_name, threads))
        model = LlmUnderstander(llm, timeout_s=timeout_s)
        await model.warm()
        llm.prompts.clear()
        warmup_s = time.perf_counter() - began
    if base == SEMANTIC and semantic is None:
        raise HeldoutError("the semantic chain needs the semantic understander")
    chain = product_chain(semantic if base == SEMANTIC else None, model)
    try:
        outcomes = [await classify(utterance, chain, llm) for utterance in utterances]
    finally:
        if llm is not None:
            llm.close()
    summary = summarize(chain_name, outcomes)
    summary["llm"] = llm_name
    summary["load_and_warmup_s"] = round(warmup_s, 2)
    return summary, outcomes


def parse_chain(name: str) -> tuple[str, str]:
    """ "rules", "semantic", "rules+MODEL" or "semantic+MODEL" as (base, llm name or "none")."""
    base, _, llm_name = name.partition("+")
    if base not in (RULES, SEMANTIC) or (llm_name and llm_name == NO_LLM):
        raise HeldoutError(f"unknown chain {name!r}: rules or semantic, optionally +MODEL")
    return base, llm_name or NO_LLM


def report(summary: dict[str, Any]) -> str:
    kinds = summary["by_kind"]
    latency = summary["latency_ms"]
    lines = [
        f"{summary['understander']}: accuracy {summary['correct']}/{summary['lines']} ({summary['accuracy']:.1%}); "
        + ", ".join(f"{kind} {value['accuracy']:.1%} of {value['lines']}" for kind, value in kinds.items()),
        "  recall: " + ", ".join(f"{intent} {score}" for intent, score in summary["recall"].items()),
        "  top confusions (gold->outcome): "
        + (", ".join(f"{pair} x{count}" for pair, count in summary["top_confusions"].items()) or "none"),
        f"  screened: {summary['screened_manipulation']} manipulation, {summary['screened_in_scope']} in-scope, "
        f"{summary['screened_out_of_scope']} out-of-scope lines; angry readings {summary['angry']}",
        "  answered by: "
        + ", ".join(
            f"{source} {value['lines']} lines ({value['accuracy']:.1%} right)"
            for source, value in summary["answered_by"].items()
        ),
        f"  LLM consulted for {summary['llm_consulted']:.1%} of lines; latency per line p50 {latency['p50']} ms, "
        f"p95 {latency['p95']} ms (lines with an LLM call: p50 {latency['p50_with_llm']} ms, "
        f"p95 {latency['p95_with_llm']} ms)",
    ]
    return "\n".join(lines)


def _wrong_lines(outcomes: Sequence[Outcome]) -> str:
    return "\n".join(
        f"  WRONG [{o.utterance.expect}] {o.utterance.intent} -> {o.label}{' (angry)' if o.angry else ''}: "
        f"{o.utterance.text!r}"
        for o in outcomes
        if not o.correct
    )


async def main_async(args: argparse.Namespace) -> int:
    utterances = load(args.set)
    counts = Counter(utterance.kind for utterance in utterances)
    print(f"held-out set: {len(utterances)} utterances from {args.set} ({dict(counts)})")
    summaries = []
    chains = [parse_chain(name) for name in args.chains]  # every name checked before anything loads
    semantic = None
    if any(base == SEMANTIC for base, _ in chains):
        semantic = await asyncio.to_thread(load_semantic, Manifest.load(args.models))
    try:
        for name in args.chains:
            summary, outcomes = await evaluate(
                utterances, name, semantic.understander if semantic else None, args.threads, args.llm_timeout
            )
            print(report(summary), flush=True)
            if args.show_wrong:
                print(_wrong_lines(outcomes), flush=True)
            summaries.append(summary)
    finally:
        if semantic is not None:
            semantic.close()
    print(
        json.dumps(
            {"heldout": {"set": str(args.set), "lines": len(utterances), "results": summaries}}, separators=(",", ":")
        )
    )
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m banking.eval.heldout_run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--chains",
        nargs="+",
        default=list(DEFAULT_CHAINS),
        help="rules or semantic, each optionally +MODEL (a model name in .models)",
    )
    parser.add_argument("--models", type=Path, default=Path(".models"), help="the models folder")
    parser.add_argument("--set", type=Path, default=DEFAULT_HELDOUT, help="the held-out utterances (JSON lines)")
    parser.add_argument("--threads", type=int, default=EVAL_THREADS, help="llama.cpp threads")
    parser.add_argument("--llm-timeout", type=float, default=EVAL_LLM_TIMEOUT_S, help="seconds per LLM understanding")
    parser.add_argument("--show-wrong", action="store_true", help="print every line scored wrong")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

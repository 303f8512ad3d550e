"""The product's understanding chain, in one place: who is asked, in which order, and why.

1. The rules, certain readings only (`FastPathUnderstander(keywords=False)`): an angry caller, a request
   for a human, the yes/no, digits or date just asked for, small talk on its own. Microseconds.
2. The semantic understander (banking/semantic.py): the whole sentence against the designers' examples
   and the knowledge base's questions. A few milliseconds; abstains when its confidence is low.
3. The keyword rules (`FastPathUnderstander()`), only once the semantic reading abstained: a keyword never
   overrides a clearer reading of the whole sentence, but is better than nothing.
4. The LLM, with its tight time budget, only for what is still not understood.

Without embeddings (`semantic=None`) the chain is the rules with keywords, then the LLM, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, cast

from banking.dates import DateOrder, parse_date
from banking.fastpath import FastPathUnderstander
from banking.guard import screen
from banking.intent_catalog import IntentCatalog
from banking.intents import (
    MIN_CONFIDENCE,
    ChainUnderstander,
    Expect,
    Intent,
    Slots,
    Understander,
    Understanding,
)
from banking.knowledge import KnowledgeBase
from banking.redact import redact
from banking.semantic import ExampleIndex, SemanticUnderstander
from engines.base import Embedder, VectorStore
from engines.manifest import Manifest
from engines.registry import load_engine

DEFAULT_EMBED_MODEL: Final = "minilm-l6"
SPECULATIONS_KEPT: Final = 16  # in flight at once, across the node's calls


def product_chain(
    semantic: Understander | None, llm: Understander | None, order: DateOrder = DateOrder.MDY
) -> ChainUnderstander:
    """The chain in the order of this module's docstring (see `SpeculativeUnderstander` to start it early)."""
    understanders: list[Understander] = []
    if semantic is not None:
        understanders += [FastPathUnderstander(order, keywords=False), semantic]
    understanders.append(FastPathUnderstander(order))
    if llm is not None:
        understanders.append(llm)
    return ChainUnderstander(understanders)


def open_index(
    embedder: Embedder,
    store: VectorStore,
    model_id: str,
    catalog: IntentCatalog | None = None,
    knowledge: KnowledgeBase | None = None,
    *,
    rebuild: bool = False,
) -> tuple[ExampleIndex, bool]:
    """The example index over the designers' content, built if missing (or `rebuild`) and its head trained;
    blocking (it embeds), so run it off the event loop. Returns it and whether it was (re)built."""
    index = ExampleIndex(embedder, store, catalog or IntentCatalog.load(), knowledge or KnowledgeBase.load(), model_id)
    built = index.build(force=rebuild)
    index.train()
    return index, built


@dataclass(frozen=True, slots=True)
class Semantic:
    """A ready semantic understander with what it was built from; `close()` releases the vector store."""

    understander: SemanticUnderstander
    index: ExampleIndex
    knowledge: KnowledgeBase
    built: bool  # the index was (re)built at open, rather than found current
    store: VectorStore

    def close(self) -> None:
        self.store.close()


def load_semantic(
    manifest: Manifest,
    *,
    model: str = DEFAULT_EMBED_MODEL,
    vectors: Mapping[str, object] | None = None,
    rebuild: bool = False,
) -> Semantic:
    """Load the embedding model and the vector store (`vectors`: the qdrant provider's options; an in-memory
    store by default, for evaluations), then open the index; blocking, so call it in a thread."""
    embedder = cast(Embedder, load_engine("embed", {"provider": "minilm", "model": model}, manifest))
    options = {"path": ":memory:", **(vectors or {}), "provider": "qdrant"}
    store = cast(VectorStore, load_engine("vectors", options, manifest))
    try:
        knowledge = KnowledgeBase.load()
        index, built = open_index(embedder, store, manifest.entry(model).sha256, knowledge=knowledge, rebuild=rebuild)
    except BaseException:
        store.close()
        raise
    return Semantic(SemanticUnderstander(index), index, knowledge, built, store)


@dataclass(frozen=True, slots=True)
class Interpretation:
    """One utterance read as the dialogue reads it: what it means (None: not understood) and who decided."""

    understanding: Understanding | None
    source: str  # "guard", "dates", an understander's name, or "" when nothing understood it


async def interpret(
    text: str, expect: Expect, understander: Understander, order: DateOrder = DateOrder.MDY
) -> Interpretation:
    """The dialogue's reading without a dialogue (`Dialogue._on_text`'s order): the guard's screen, then a date
    of birth where one was asked, then the understander on the redacted text. For evaluations and tools."""
    if (kind := screen(text)) is not None:
        return Interpretation(Understanding(Intent.MANIPULATION, source="guard"), f"guard:{kind.value}")
    if expect is Expect.DATE and (date := parse_date(text, order)) is not None:
        return Interpretation(Understanding(Intent.DATE, Slots(date=date), source="dates"), "dates")
    understanding = await understander.understand(redact(text), expect)
    if understanding is None or understanding.confidence < MIN_CONFIDENCE:
        return Interpretation(None, "")
    return Interpretation(understanding, understanding.source)


class SpeculativeUnderstander:
    """Understands the speculative transcript while the caller's turn is still ending, so that the turn's answer
    does not wait for a slow understander (the LLM) from the turn's end. Owns the in-flight readings, a few at a
    time; shared by every call (the same words expecting the same answer read the same, whoever said them)."""

    def __init__(self, inner: Understander, *, keep: int = SPECULATIONS_KEPT) -> None:
        self._inner = inner
        self._keep = keep
        self._pending: dict[tuple[str, Expect], asyncio.Task[Understanding | None]] = {}
        self.reused = 0  # readings `understand` found already started (for tests and the logs)

    def prefetch(self, text: str, expect: Expect) -> None:
        key = (text, expect)
        if key in self._pending or not text.strip():
            return
        while len(self._pending) >= self._keep:  # the oldest speculation is the least likely to be asked for
            oldest = next(iter(self._pending))
            self._pending.pop(oldest).cancel()
        task = asyncio.get_running_loop().create_task(self._inner.understand(text, expect))
        self._pending[key] = task

    async def understand(self, text: str, expect: Expect) -> Understanding | None:
        task = self._pending.pop((text, expect), None)
        if task is not None:
            self.reused += 1
            return await task
        return await self._inner.understand(text, expect)

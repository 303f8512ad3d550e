"""Understanding by meaning: the caller's whole sentence against the designers' examples.

The examples of every intent (banking/content/intents.yaml) and the questions of every knowledge entry
(banking/content/knowledge.yaml) are embedded once into one vector collection (`ExampleIndex.build`,
`avc reindex`). At start the index trains a small linear (softmax) head on those vectors: which intent an
embedding means, all knowledge entries counting as one class "knowledge". An utterance is embedded (a few
milliseconds on a CPU) and read two ways: by the head, and by its `NEIGHBOURS` nearest examples in the
vector store, each weighted by how close it is (`neighbour_vote`). The two are mixed (`HEAD_WEIGHT`); the
mixed probability of the winner is the confidence, and below `ABSTAIN_BELOW` the understander abstains and
the next one in the chain (the keyword rules, then the LLM) is asked: it never guesses. A "knowledge"
reading is then answered by retrieval: the nearest knowledge question names the entry.

Why both: on the examples themselves (5-fold cross-validation, `ExampleIndex.cross_validate`) the head alone
is right more often than the neighbours alone (81 % against 75 %: neighbours are fooled by near-identical
sentences of opposite meaning, "lock it" / "unlock it"), and the mix is as accurate with fewer confident
mistakes. Both figures are logged at start, so a designer's edit that blurs two intents shows up there.

The collection's name carries a fingerprint of the examples, the answers and the embedding model, so a
changed file or model is never searched against a stale index, and nodes sharing a Qdrant server share
an index only when they hold the same content.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from banking.intent_catalog import ANY_EXPECT, IntentCatalog
from banking.intents import Expect, Intent, Slots, Understanding
from banking.knowledge import KnowledgeBase
from engines.base import Embedder, Vectors, VectorStore

log = logging.getLogger(__name__)

COLLECTION_PREFIX: Final = "avc_understanding_"
NEIGHBOURS: Final = 10
TEMPERATURE: Final = 0.05  # a neighbour 0.05 less similar than the best weighs e^-1 as much
HEAD_WEIGHT: Final = 0.7  # the head's share of the mixed reading; the neighbours have the rest
ABSTAIN_BELOW: Final = 0.7  # mixed probability under which the next understander is asked
EMBED_BATCH: Final = 64
KNOWLEDGE: Final = "knowledge"
KNOWLEDGE_LABEL: Final = "knowledge:"
SOURCE: Final = "semantic"
# The softmax head: cosine similarities scaled by HEAD_SCALE, plain gradient descent with a little L2.
HEAD_SCALE: Final = 20.0
HEAD_STEPS: Final = 300
HEAD_RATE: Final = 2.0
HEAD_L2: Final = 1e-3
FOLDS: Final = 5


def _class_of(label: str) -> str:
    return KNOWLEDGE if label.startswith(KNOWLEDGE_LABEL) else label


def neighbour_vote(neighbours: Sequence[tuple[str, float]], classes: Sequence[str]) -> npt.NDArray[np.float64]:
    """The nearest examples' vote over `classes`, each weighted by its similarity to the best; sums to 1."""
    votes = np.zeros(len(classes))
    if not neighbours:
        return votes
    position = {name: i for i, name in enumerate(classes)}
    top = neighbours[0][1]
    for label, score in neighbours:
        votes[position[_class_of(label)]] += math.exp((score - top) / TEMPERATURE)
    return np.asarray(votes / votes.sum(), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Head:
    """A softmax layer from an embedding to the classes; trained on the index's own examples."""

    classes: tuple[str, ...]
    weights: npt.NDArray[np.float64]  # (dimension, classes)
    bias: npt.NDArray[np.float64]

    @classmethod
    def train(cls, vectors: Vectors, labels: Sequence[str], classes: Sequence[str]) -> Head:
        position = {name: i for i, name in enumerate(classes)}
        targets = np.eye(len(classes))[[position[label] for label in labels]]
        x = vectors.astype(np.float64)
        weights = np.zeros((x.shape[1], len(classes)))
        bias = np.zeros(len(classes))
        for _ in range(HEAD_STEPS):
            probabilities = _softmax(HEAD_SCALE * (x @ weights) + bias)
            gradient = (probabilities - targets) / len(labels)
            weights -= HEAD_RATE * (HEAD_SCALE * x.T @ gradient + HEAD_L2 * weights)
            bias -= HEAD_RATE * gradient.sum(axis=0)
        return cls(tuple(classes), weights, bias)

    def probabilities(self, vectors: Vectors) -> npt.NDArray[np.float64]:
        return _softmax(HEAD_SCALE * (vectors.astype(np.float64) @ self.weights) + self.bias)


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


@dataclass(frozen=True, slots=True)
class Reading:
    """What the index makes of one utterance: the winning class, its mixed probability, and the knowledge
    entry when the class is "knowledge"."""

    label: str
    probability: float
    entry: str | None = None


@dataclass(frozen=True, slots=True)
class CrossValidation:
    """How the understander does on its own examples, each read by a head trained without it."""

    examples: int
    accuracy: float  # mixed reading
    head_accuracy: float
    neighbour_accuracy: float
    answered: float  # share at or above ABSTAIN_BELOW
    answered_accuracy: float


def _where(expect: Expect) -> Mapping[str, Sequence[str]]:
    # Yes/no examples ("sure", "nope") only count when a yes/no question was asked.
    if expect is Expect.YES_NO:
        return {"expect": [ANY_EXPECT, Expect.YES_NO.value]}
    return {"expect": [ANY_EXPECT]}


class ExampleIndex:
    """The examples' vector collection in a `VectorStore` and the head trained on it; owns neither engine.

    Built from an `IntentCatalog` and a `KnowledgeBase` with an `Embedder`; `classify` blocks (embedding,
    search), so the async understander runs it in a thread.
    """

    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        catalog: IntentCatalog,
        knowledge: KnowledgeBase,
        model_id: str,
    ) -> None:
        self._embedder = embedder
        self._store = store
        self._rows = self._content_rows(catalog, knowledge)
        digest = hashlib.sha256(json.dumps([model_id, self._rows], sort_keys=True).encode()).hexdigest()
        self.collection = COLLECTION_PREFIX + digest[:16]
        self.classes = tuple(sorted({_class_of(row["label"]) for row in self._rows}))
        self._yes_no = np.array(
            [any(r["expect"] != ANY_EXPECT for r in self._rows if _class_of(r["label"]) == c) for c in self.classes]
        )
        self.head: Head | None = None

    @staticmethod
    def _content_rows(catalog: IntentCatalog, knowledge: KnowledgeBase) -> list[dict[str, str]]:
        rows = [
            {"text": example, "label": d.intent.value, "kind": "intent", "expect": d.expect}
            for d in catalog.descriptions
            for example in d.examples
        ]
        rows += [
            {"text": question, "label": KNOWLEDGE_LABEL + entry.id, "kind": KNOWLEDGE, "expect": ANY_EXPECT}
            for entry in knowledge.entries
            for question in entry.questions
        ]
        return rows

    @property
    def size(self) -> int:
        return len(self._rows)

    def is_built(self) -> bool:
        return self.collection in self._store.collections()

    def build(self, *, force: bool = False) -> bool:
        """Embed and store the content unless an index of the same content exists; True when it (re)built.

        Older indexes of this line (other content) are deleted once the new one is complete.
        """
        if not force and self.is_built():
            return False
        texts = [row["text"] for row in self._rows]
        vectors = np.concatenate(
            [self._embedder.embed(texts[i : i + EMBED_BATCH]) for i in range(0, len(texts), EMBED_BATCH)]
        )
        self._store.replace_collection(self.collection, vectors, self._rows)
        for name in self._store.collections():
            if name.startswith(COLLECTION_PREFIX) and name != self.collection:
                self._store.delete_collection(name)
        return True

    def train(self) -> Head:
        """Train the head on every stored example (read back from the store: nothing is embedded twice)."""
        vectors, payloads = self._store.points(self.collection)
        self.head = Head.train(vectors, [_class_of(p["label"]) for p in payloads], self.classes)
        return self.head

    def cross_validate(self, folds: int = FOLDS, seed: int = 0) -> CrossValidation:
        """Read every example with a head trained and neighbours taken without its fold (for the start-up log,
        and for designers: a figure that drops after an edit means two intents now overlap)."""
        vectors, payloads = self._store.points(self.collection)
        labels = [_class_of(p["label"]) for p in payloads]
        expects = [p["expect"] for p in payloads]
        order = np.random.default_rng(seed).permutation(len(labels))
        similarities = vectors @ vectors.T
        mixed_right = head_right = neighbours_right = answered = answered_right = 0
        for fold in np.array_split(order, folds):
            train = np.setdiff1d(order, fold)
            head = Head.train(vectors[train], [labels[i] for i in train], self.classes)
            probabilities = head.probabilities(vectors[fold])
            for n, i in enumerate(fold):
                allowed = np.zeros(len(labels), dtype=bool)
                allowed[train] = True
                if expects[i] == ANY_EXPECT:
                    allowed &= np.array([e == ANY_EXPECT for e in expects])
                row = np.where(allowed, similarities[i], -np.inf)
                nearest = [int(j) for j in np.argsort(-row)[:NEIGHBOURS] if np.isfinite(row[j])]
                votes = neighbour_vote([(labels[j], float(row[j])) for j in nearest], self.classes)
                head_p = self._for_expect(probabilities[n], Expect.YES_NO if expects[i] != ANY_EXPECT else Expect.FREE)
                mixed = HEAD_WEIGHT * head_p + (1 - HEAD_WEIGHT) * votes
                truth = self.classes.index(labels[i])
                head_right += int(np.argmax(head_p)) == truth
                neighbours_right += int(np.argmax(votes)) == truth
                mixed_right += int(np.argmax(mixed)) == truth
                if mixed.max() >= ABSTAIN_BELOW:
                    answered += 1
                    answered_right += int(np.argmax(mixed)) == truth
        total = max(1, len(labels))
        return CrossValidation(
            len(labels),
            mixed_right / total,
            head_right / total,
            neighbours_right / total,
            answered / total,
            answered_right / max(1, answered),
        )

    def _for_expect(self, probabilities: npt.NDArray[np.float64], expect: Expect) -> npt.NDArray[np.float64]:
        # Yes/no classes only count when a yes/no question was asked.
        if expect is Expect.YES_NO:
            return probabilities
        kept = np.where(self._yes_no, 0.0, probabilities)
        return kept / max(float(kept.sum()), 1e-12)

    def classify(self, text: str, expect: Expect) -> Reading | None:
        """The mixed reading of `text` (None before `train`, or with nothing stored)."""
        if self.head is None:
            return None
        vector = self._embedder.embed([text])
        hits = self._store.search(self.collection, vector[0], NEIGHBOURS, _where(expect))
        if not hits:
            return None
        votes = neighbour_vote([(hit.payload["label"], hit.score) for hit in hits], self.classes)
        mixed = HEAD_WEIGHT * self._for_expect(self.head.probabilities(vector)[0], expect) + (1 - HEAD_WEIGHT) * votes
        best = int(np.argmax(mixed))
        label = self.classes[best]
        entry = None
        if label == KNOWLEDGE:
            # Retrieval: the nearest knowledge question names the entry whose approved answer is spoken.
            nearest = [hit for hit in hits if hit.payload["label"].startswith(KNOWLEDGE_LABEL)]
            if not nearest:
                nearest = self._store.search(self.collection, vector[0], 1, {"kind": [KNOWLEDGE]})
            if not nearest:
                return None
            entry = nearest[0].payload["label"].removeprefix(KNOWLEDGE_LABEL)
        return Reading(label, float(mixed[best]), entry)


def understanding_of(reading: Reading) -> Understanding:
    """The `Understanding` a reading stands for."""
    confidence = min(1.0, reading.probability)
    if reading.label == KNOWLEDGE:
        return Understanding(Intent.KNOWLEDGE, Slots(entry=reading.entry), confidence, source=SOURCE)
    return Understanding(Intent(reading.label), confidence=confidence, source=SOURCE)


class SemanticUnderstander:
    """An `Understander` over a trained `ExampleIndex`; shared by every call, stateless per call."""

    name = SOURCE

    def __init__(self, index: ExampleIndex, *, abstain_below: float = ABSTAIN_BELOW) -> None:
        if not 0.0 <= abstain_below <= 1.0:
            raise ValueError(f"abstain_below must be within [0, 1], got {abstain_below}")
        self._index = index
        self._abstain_below = abstain_below

    async def understand(self, text: str, expect: Expect) -> Understanding | None:
        if not text.strip():
            return None
        began = time.perf_counter()
        reading = await asyncio.to_thread(self._index.classify, text, expect)
        log.debug(
            "semantic: %s p=%.2f in %.1f ms",
            reading.label if reading else None,
            reading.probability if reading else 0.0,
            (time.perf_counter() - began) * 1000,
        )
        if reading is None or reading.probability < self._abstain_below:
            return None
        return understanding_of(reading)

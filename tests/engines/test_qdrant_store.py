"""Qdrant as the vector store, embedded (a folder, and in memory): nearest first by cosine, payload filters,
replacement, persistence across reopening, and the folder's lock reported as a typed error."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from engines.base import VectorStore
from engines.errors import EngineConfigError, EngineInputError
from engines.manifest import MANIFEST_NAME, Manifest
from engines.registry import load_engine

pytest.importorskip("qdrant_client", reason="the `local` extra (qdrant-client) is not installed")
from engines.vectors import qdrant
from engines.vectors.qdrant import QdrantOptions, QdrantStore, VectorStoreLocked

Vector = npt.NDArray[np.float32]


def unit(*components: float) -> Vector:
    vector = np.array(components, dtype=np.float32)
    return np.asarray(vector / np.linalg.norm(vector), dtype=np.float32)


# Four unit vectors in 3-D; their cosines with the query `unit(1, 0, 0)` are 1, 0.8, 0.6 and 0.
EXAMPLES = np.vstack([unit(1, 0, 0), unit(0.8, 0.6, 0), unit(0.6, 0, 0.8), unit(0, 1, 0)])
PAYLOADS = [
    {"intent": "balance", "text": "what's my balance"},
    {"intent": "lock_card", "text": "freeze my card"},
    {"intent": "balance", "text": "how much money do I have"},
    {"intent": "goodbye", "text": "bye"},
]


@pytest.fixture(params=["folder", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QdrantStore]:
    path = str(tmp_path / "vectors") if request.param == "folder" else ":memory:"
    opened = QdrantStore.open(QdrantOptions(path=path))
    yield opened
    opened.close()


def test_search_returns_the_nearest_first_with_cosine_scores_and_payloads(store: QdrantStore) -> None:
    store.replace_collection("examples", EXAMPLES, PAYLOADS)
    hits = store.search("examples", unit(1, 0, 0), limit=3)
    assert [hit.payload for hit in hits] == PAYLOADS[:3]
    assert [hit.score for hit in hits] == pytest.approx([1.0, 0.8, 0.6], abs=1e-5)


def test_search_accepts_the_query_as_a_one_row_matrix(store: QdrantStore) -> None:
    store.replace_collection("examples", EXAMPLES, PAYLOADS)
    hits = store.search("examples", unit(0, 1, 0)[None, :], limit=1)
    assert [hit.payload["text"] for hit in hits] == ["bye"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_where_keeps_only_points_whose_field_is_in_the_list(store: QdrantStore) -> None:
    store.replace_collection("examples", EXAMPLES, PAYLOADS)
    balance = store.search("examples", unit(1, 0, 0), limit=10, where={"intent": ["balance"]})
    assert [hit.payload["text"] for hit in balance] == ["what's my balance", "how much money do I have"]
    either = store.search("examples", unit(0, 1, 0), limit=10, where={"intent": ["goodbye", "lock_card"]})
    assert [hit.payload["intent"] for hit in either] == ["goodbye", "lock_card"]
    assert store.search("examples", unit(1, 0, 0), limit=10, where={"intent": ["agent"]}) == []


def test_replace_collection_drops_the_old_points(store: QdrantStore) -> None:
    store.replace_collection("examples", EXAMPLES, PAYLOADS)
    store.replace_collection("examples", EXAMPLES[3:], PAYLOADS[3:])
    hits = store.search("examples", unit(1, 0, 0), limit=10)
    assert [hit.payload for hit in hits] == [PAYLOADS[3]]
    vectors, payloads = store.points("examples")
    assert vectors.shape == (1, 3)
    assert payloads == [PAYLOADS[3]]


def test_replace_collection_may_change_the_dimension(store: QdrantStore) -> None:
    store.replace_collection("examples", EXAMPLES, PAYLOADS)
    store.replace_collection("examples", np.vstack([unit(1, 0, 0, 0, 0)]), [{"intent": "yes"}])
    assert store.search("examples", unit(1, 0, 0, 0, 0), limit=5)[0].payload == {"intent": "yes"}


def test_collections_lists_the_names_and_delete_collection_removes_one(store: QdrantStore) -> None:
    assert store.collections() == []
    store.replace_collection("knowledge", EXAMPLES[:2], PAYLOADS[:2])
    store.replace_collection("examples", EXAMPLES, PAYLOADS)
    assert store.collections() == ["examples", "knowledge"]
    store.delete_collection("knowledge")
    assert store.collections() == ["examples"]


def test_points_returns_every_vector_in_insertion_order_with_its_payload(
    store: QdrantStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small batches and pages, so 23 points take several upserts and several scroll pages, both ending part-full.
    monkeypatch.setattr(qdrant, "UPSERT_BATCH", 7)
    monkeypatch.setattr(qdrant, "SCROLL_PAGE", 5)
    rng = np.random.default_rng(3)
    raw = rng.standard_normal((23, 8)).astype(np.float32)
    vectors = np.asarray(raw / np.linalg.norm(raw, axis=1, keepdims=True), dtype=np.float32)
    payloads = [{"n": str(n)} for n in range(len(vectors))]
    store.replace_collection("many", vectors, payloads)

    stored, stored_payloads = store.points("many")

    assert stored.dtype == np.float32
    np.testing.assert_allclose(stored, vectors, atol=1e-6)
    assert stored_payloads == payloads


@pytest.mark.parametrize(
    ("vectors", "payloads"),
    [
        pytest.param(EXAMPLES, PAYLOADS[:3], id="fewer-payloads"),
        pytest.param(EXAMPLES[:2], PAYLOADS, id="more-payloads"),
        pytest.param(EXAMPLES[0], PAYLOADS[:1], id="one-dimensional-vectors"),
    ],
)
def test_vectors_and_payloads_of_different_lengths_are_refused(
    store: QdrantStore, vectors: Vector, payloads: list[dict[str, str]]
) -> None:
    with pytest.raises(EngineInputError):
        store.replace_collection("examples", vectors, payloads)
    assert store.collections() == []


def test_a_folder_keeps_its_collections_after_the_store_is_closed_and_reopened(tmp_path: Path) -> None:
    folder = str(tmp_path / "vectors")
    first = QdrantStore.open(QdrantOptions(path=folder))
    first.replace_collection("examples", EXAMPLES, PAYLOADS)
    first.close()

    reopened = QdrantStore.open(QdrantOptions(path=folder))
    try:
        assert reopened.collections() == ["examples"]
        vectors, payloads = reopened.points("examples")
        np.testing.assert_allclose(vectors, EXAMPLES, atol=1e-6)
        assert payloads == PAYLOADS
        assert reopened.search("examples", unit(1, 0, 0), limit=1)[0].payload == PAYLOADS[0]
    finally:
        reopened.close()


def test_open_creates_a_missing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "not" / "yet"
    store = QdrantStore.open(QdrantOptions(path=str(folder)))
    try:
        assert folder.is_dir()
        assert store.where == str(folder)
    finally:
        store.close()


# qdrant-client leaves the refused client's handle on the .lock file open; it is collected here, in this test.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_second_store_on_a_folder_held_by_an_open_store_raises_vector_store_locked(tmp_path: Path) -> None:
    folder = tmp_path / "vectors"
    holder = QdrantStore.open(QdrantOptions(path=str(folder)))
    try:
        holder.replace_collection("examples", EXAMPLES, PAYLOADS)
        with pytest.raises(VectorStoreLocked, match="in use by another store") as raised:
            QdrantStore.open(QdrantOptions(path=str(folder)))
        assert isinstance(raised.value, EngineConfigError)
        assert str(folder) in str(raised.value)
        # The holder is untouched by the refused second open.
        assert holder.search("examples", unit(1, 0, 0), limit=1)[0].payload == PAYLOADS[0]
    finally:
        holder.close()
    del raised
    gc.collect()


def test_the_folder_can_be_opened_again_once_its_holder_closes(tmp_path: Path) -> None:
    folder = str(tmp_path / "vectors")
    QdrantStore.open(QdrantOptions(path=folder)).close()
    QdrantStore.open(QdrantOptions(path=folder)).close()


def test_the_registry_loads_qdrant_as_a_vector_store(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({}), encoding="utf-8")
    engine = load_engine("vectors", {"provider": "qdrant", "path": str(tmp_path / "vectors")}, Manifest.load(tmp_path))
    assert isinstance(engine, QdrantStore)
    try:
        assert isinstance(engine, VectorStore)
    finally:
        engine.close()


def test_options_without_a_path_or_url_are_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({}), encoding="utf-8")
    with pytest.raises(EngineConfigError, match="needs a path"):
        load_engine("vectors", {"provider": "qdrant", "path": ""}, Manifest.load(tmp_path))

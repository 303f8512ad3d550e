"""Qdrant as the `VectorStore`: embedded in the process (a folder) by default, a Qdrant server by URL.

Embedded ("local mode" of qdrant-client) keeps the collections in a folder and searches them in the
process: nothing to run, which suits one node and the few thousand vectors a bank's understanding
needs. A bank that outgrows one machine, or wants every node to share one index, points `url` at a
Qdrant server; nothing else changes. Local mode locks its folder, so one process owns it at a time;
`QdrantStore.open` says so plainly instead of qdrant-client's traceback.

Points get integer ids in insertion order; payload values are strings (intent labels, texts,
knowledge entry ids). Cosine distance: the scores are the embeddings' cosine similarities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from qdrant_client import QdrantClient, models

from engines.base import VectorHit, Vectors
from engines.errors import EngineConfigError, EngineInputError
from engines.manifest import Manifest
from engines.options import parse_options

UPSERT_BATCH: Final = 256
SCROLL_PAGE: Final = 512
DEFAULT_PATH: Final = ".vectors"


class VectorStoreLocked(EngineConfigError):
    """The embedded store's folder is held by another process."""


@dataclass(frozen=True, slots=True)
class QdrantOptions:
    path: str = DEFAULT_PATH  # embedded: a folder of this process's own
    url: str = ""  # a Qdrant server ("http://127.0.0.1:6333"); set, it wins over `path`
    timeout_s: int = 5

    def __post_init__(self) -> None:
        if not self.url and not self.path:
            raise ValueError("qdrant needs a path (embedded) or a url (server)")


class QdrantStore:
    """A `VectorStore` on one qdrant-client connection; owns that client (and, embedded, the folder's lock)."""

    def __init__(self, client: QdrantClient, where: str) -> None:
        self._client = client
        self.where = where

    @classmethod
    def open(cls, options: QdrantOptions) -> QdrantStore:
        if options.url:
            return cls(QdrantClient(url=options.url, timeout=options.timeout_s), options.url)
        if options.path == ":memory:":
            return cls(QdrantClient(location=":memory:"), ":memory:")
        folder = Path(options.path)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            client = QdrantClient(path=str(folder))
        except RuntimeError as exc:  # qdrant-client's message for a folder another client holds
            raise VectorStoreLocked(f"the vector store {folder} is in use by another store ({exc})") from exc
        return cls(client, str(folder))

    def collections(self) -> list[str]:
        return sorted(collection.name for collection in self._client.get_collections().collections)

    def replace_collection(self, name: str, vectors: Vectors, payloads: Sequence[Mapping[str, str]]) -> None:
        if vectors.ndim != 2 or vectors.shape[0] != len(payloads):
            raise EngineInputError(f"{len(payloads)} payloads for vectors of shape {vectors.shape}")
        if self._client.collection_exists(name):
            self._client.delete_collection(name)
        self._client.create_collection(
            name, vectors_config=models.VectorParams(size=int(vectors.shape[1]), distance=models.Distance.COSINE)
        )
        for start in range(0, len(payloads), UPSERT_BATCH):
            end = min(start + UPSERT_BATCH, len(payloads))
            self._client.upsert(
                name,
                points=models.Batch(
                    ids=list(range(start, end)),
                    vectors=vectors[start:end].astype(float).tolist(),
                    payloads=[dict(payload) for payload in payloads[start:end]],
                ),
                wait=True,
            )

    def delete_collection(self, name: str) -> None:
        self._client.delete_collection(name)

    def search(
        self, name: str, vector: Vectors, limit: int, where: Mapping[str, Sequence[str]] | None = None
    ) -> list[VectorHit]:
        query_filter = None
        if where:
            query_filter = models.Filter(
                must=[
                    models.FieldCondition(key=key, match=models.MatchAny(any=list(values)))
                    for key, values in where.items()
                ]
            )
        result = self._client.query_points(
            name,
            query=vector.reshape(-1).astype(float).tolist(),
            limit=limit,
            query_filter=query_filter,
            with_payload=True,
        )
        return [
            VectorHit(float(point.score), {str(k): str(v) for k, v in (point.payload or {}).items()})
            for point in result.points
        ]

    def points(self, name: str) -> tuple[Vectors, list[Mapping[str, str]]]:
        rows: list[tuple[int, list[float], Mapping[str, str]]] = []
        offset: int | str | None = None
        while True:
            page, next_offset = self._client.scroll(
                name, limit=SCROLL_PAGE, offset=offset, with_payload=True, with_vectors=True
            )
            for point in page:
                vector = point.vector
                if not isinstance(vector, list) or not all(isinstance(x, float | int) for x in vector):
                    raise EngineInputError(f"{name}: point {point.id} has no plain vector")
                payload = {str(k): str(v) for k, v in (point.payload or {}).items()}
                rows.append((int(point.id), [float(x) for x in vector if isinstance(x, float | int)], payload))
            if next_offset is None:
                break
            offset = next_offset if isinstance(next_offset, int | str) else str(next_offset)
        rows.sort(key=lambda row: row[0])
        vectors = np.array([row[1] for row in rows], dtype=np.float32).reshape(len(rows), -1)
        return vectors, [row[2] for row in rows]

    def close(self) -> None:
        self._client.close()


def load(manifest: Manifest, raw: Mapping[str, object]) -> QdrantStore:
    """The registry's factory; the manifest is unused (a store holds no model)."""
    del manifest
    return QdrantStore.open(parse_options(QdrantOptions, raw, "vectors qdrant"))

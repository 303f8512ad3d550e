"""all-MiniLM-L6-v2 in numpy: the reference model's similarities, batch-independent rows, typed errors, and the
safetensors reader on files written byte by byte."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from engines.base import Embedder
from engines.errors import EngineConfigError, EngineInputError
from engines.manifest import MANIFEST_NAME, Manifest
from engines.registry import load_engine
from tests.engines.installed import require_model

pytest.importorskip("tokenizers", reason="the `local` extra (tokenizers) is not installed")
from engines.embed.minilm import HIDDEN, MODEL_NAME, MiniLmEmbedder, load, read_safetensors

# The example of sentence-transformers' documentation ("Computing Embeddings", all-MiniLM-L6-v2): the model's
# published cosine similarities for these three sentences.
SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
PUBLISHED = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411}


@pytest.fixture(scope="module")
def embedder(manifest: Manifest) -> Iterator[MiniLmEmbedder]:
    require_model(manifest, MODEL_NAME)
    engine = load(manifest, {})
    yield engine
    engine.close()


@pytest.fixture
def empty_manifest(tmp_path: Path) -> Manifest:
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({}), encoding="utf-8")
    return Manifest.load(tmp_path)


def safetensors_bytes(
    tensors: Mapping[str, npt.NDArray[np.generic]], metadata: Mapping[str, str] | None = None
) -> bytes:
    """A .safetensors file as the format specifies it: u64 little-endian header length, JSON header, raw data."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata is not None else {}
    data = b""
    for name, array in tensors.items():
        dtype = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}[array.dtype]
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    encoded = json.dumps(header).encode("utf-8")
    return struct.pack("<Q", len(encoded)) + encoded + data


# -- the model (needs `make models`) --


@pytest.mark.models
def test_cosine_similarities_match_the_published_sentence_transformers_values(embedder: MiniLmEmbedder) -> None:
    vectors = embedder.embed(SENTENCES)
    similarities = vectors @ vectors.T
    for (i, j), published in PUBLISHED.items():
        assert similarities[i, j] == pytest.approx(published, abs=5e-4), (SENTENCES[i], SENTENCES[j])


@pytest.mark.models
def test_rows_are_unit_length_float32_of_dimension_384(embedder: MiniLmEmbedder) -> None:
    vectors = embedder.embed([*SENTENCES, "I lost my card", "a"])
    assert embedder.dimension == HIDDEN == 384
    assert vectors.dtype == np.float32
    assert vectors.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.models
def test_padding_in_a_batch_does_not_change_any_row(embedder: MiniLmEmbedder) -> None:
    texts = [
        "hi",
        "I'd like to block my card please",
        "um hello yes I think somebody took my wallet on the train this morning and my debit card was in it",
    ]
    batch = embedder.embed(texts)
    alone = np.vstack([embedder.embed([text]) for text in texts])
    np.testing.assert_allclose(batch, alone, atol=1e-5)


@pytest.mark.models
def test_the_same_text_gives_the_same_vector_on_every_call(embedder: MiniLmEmbedder) -> None:
    np.testing.assert_array_equal(embedder.embed(["where is my new card"]), embedder.embed(["where is my new card"]))


@pytest.mark.models
def test_an_empty_list_gives_zero_rows_of_dimension_384(embedder: MiniLmEmbedder) -> None:
    vectors = embedder.embed([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


@pytest.mark.models
def test_a_plain_string_is_refused_rather_than_embedded_letter_by_letter(embedder: MiniLmEmbedder) -> None:
    with pytest.raises(EngineInputError, match="not one string"):
        embedder.embed("where is my card")


@pytest.mark.models
def test_the_registry_loads_minilm_as_an_embedder(manifest: Manifest) -> None:
    require_model(manifest, MODEL_NAME)
    engine = load_engine("embed", {"provider": "minilm"}, manifest)
    assert isinstance(engine, MiniLmEmbedder)
    try:
        assert isinstance(engine, Embedder)
        assert engine.dimension == 384
    finally:
        engine.close()


# -- options and the safetensors reader (no model needed) --


@pytest.mark.parametrize("max_tokens", [2, 7, 257])
def test_max_tokens_outside_8_to_256_is_refused_before_any_model_loads(
    empty_manifest: Manifest, max_tokens: int
) -> None:
    with pytest.raises(EngineConfigError, match="max_tokens must be within"):
        load_engine("embed", {"provider": "minilm", "max_tokens": max_tokens}, empty_manifest)


def test_an_unknown_minilm_option_is_refused(empty_manifest: Manifest) -> None:
    with pytest.raises(EngineConfigError, match="unknown option"):
        load_engine("embed", {"provider": "minilm", "max_token": 64}, empty_manifest)


def test_read_safetensors_returns_every_tensor_with_its_dtype_shape_and_values(tmp_path: Path) -> None:
    weights = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    ids = np.array([[1, -2], [3, 2**40]], dtype=np.int64)
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes({"layer.weight": weights, "ids": ids}, metadata={"format": "pt"}))

    tensors = read_safetensors(path)

    assert set(tensors) == {"layer.weight", "ids"}  # __metadata__ is not a tensor
    assert tensors["layer.weight"].dtype == np.float32
    np.testing.assert_array_equal(tensors["layer.weight"], weights)
    assert tensors["ids"].dtype == np.int64
    np.testing.assert_array_equal(tensors["ids"], ids)


def test_read_safetensors_reads_the_header_length_as_little_endian(tmp_path: Path) -> None:
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode("utf-8")
    path = tmp_path / "one.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + struct.pack("<f", 1.5))
    np.testing.assert_array_equal(read_safetensors(path)["x"], np.array([1.5], dtype=np.float32))


def test_read_safetensors_refuses_an_unsupported_dtype(tmp_path: Path) -> None:
    header = json.dumps({"half": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}).encode("utf-8")
    path = tmp_path / "half.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    with pytest.raises(EngineConfigError, match="unsupported dtype F16"):
        read_safetensors(path)


_WHOLE = safetensors_bytes({"w": np.ones((4, 4), dtype=np.float32)})
_HEADER_END = len(_WHOLE) - 4 * 4 * 4


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(0, id="empty"),
        pytest.param(5, id="inside-the-header-length"),
        pytest.param(8 + 10, id="inside-the-header"),
        pytest.param(_HEADER_END, id="no-tensor-data"),
        pytest.param(len(_WHOLE) - 4, id="inside-the-tensor-data"),
    ],
)
def test_a_truncated_safetensors_file_is_a_config_error(tmp_path: Path, length: int) -> None:
    path = tmp_path / "cut.safetensors"
    path.write_bytes(_WHOLE[:length])
    with pytest.raises(EngineConfigError):
        read_safetensors(path)


def test_a_model_folder_without_tokenizer_json_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match=r"tokenizer\.json"):
        MiniLmEmbedder(tmp_path)

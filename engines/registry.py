"""Build the engines a process needs from configuration and the model manifest.

Configuration names a provider per kind, optionally with options:

    {"vad": "silero",
     "asr": {"provider": "whisper", "model": "whisper-base", "cpu_threads": 2},
     "llm": {"provider": "llama", "model": "qwen2.5-0.5b"},
     "tts": "piper"}

Providers are found through `PROVIDERS`, a table of "module:factory" strings imported only
when configured, so the chain never imports a provider and a process that uses the cloud
engines never loads onnxruntime or llama.cpp. A factory takes `(manifest, options)` and
returns an object that satisfies the kind's protocol in `engines.base`.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, cast

from engines.base import Embedder, Llm, StreamingAsr, Tts, Vad, VectorStore
from engines.errors import EngineConfigError
from engines.manifest import Manifest

Kind = Literal["vad", "asr", "llm", "tts", "embed", "vectors"]
# The four every call's chain needs; sentence embeddings ("embed") and the vector store ("vectors") serve
# understanding and load on their own (`load_engine`).
KINDS: Final[tuple[Kind, ...]] = ("vad", "asr", "llm", "tts")

PROVIDERS: Final[Mapping[Kind, Mapping[str, str]]] = {
    "vad": {"silero": "engines.vad.silero:load"},
    "asr": {"whisper": "engines.asr.whisper:load", "vosk": "engines.asr.vosk:load"},
    "llm": {"llama": "engines.llm.llama:load", "openai": "engines.llm.openai:load"},
    "tts": {"piper": "engines.tts.piper:load", "elevenlabs": "engines.tts.elevenlabs:load"},
    "embed": {"minilm": "engines.embed.minilm:load"},
    "vectors": {"qdrant": "engines.vectors.qdrant:load"},
}

_PROTOCOLS: Final[Mapping[Kind, type]] = {
    "vad": Vad,
    "asr": StreamingAsr,
    "llm": Llm,
    "tts": Tts,
    "embed": Embedder,
    "vectors": VectorStore,
}

Factory = Callable[[Manifest, Mapping[str, object]], object]


@dataclass(frozen=True, slots=True)
class Engines:
    """One of each engine, shared by every call of the process."""

    vad: Vad
    asr: StreamingAsr
    llm: Llm
    tts: Tts

    def close(self) -> None:
        for engine in (self.vad, self.asr, self.llm, self.tts):
            engine.close()


def _split(kind: Kind, spec: object) -> tuple[str, dict[str, object]]:
    """A provider name, or a mapping with "provider" plus that provider's options."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        options = {str(key): value for key, value in spec.items()}
        provider = options.pop("provider", None)
        if isinstance(provider, str):
            return provider, options
    raise EngineConfigError(f"{kind}: expected a provider name or a mapping with 'provider', got {spec!r}")


def _factory(kind: Kind, provider: str) -> Factory:
    target = PROVIDERS[kind].get(provider)
    if target is None:
        known = ", ".join(sorted(PROVIDERS[kind]))
        raise EngineConfigError(f"unknown {kind} provider {provider!r}; known: {known}")
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # Typically the optional dependency group is not installed (e.g. `pip install .[local]`).
        raise EngineConfigError(f"{kind} provider {provider!r} cannot be imported: {exc}") from exc
    return cast(Factory, getattr(module, attribute))


def _checked(kind: Kind, provider: str, engine: object) -> object:
    if not isinstance(engine, _PROTOCOLS[kind]):
        raise EngineConfigError(f"{kind} provider {provider!r} returned {type(engine).__name__}, not a {kind} engine")
    return engine


def load_engine(kind: Kind, spec: object, manifest: Manifest) -> object:
    """Load one engine of `kind`, checked against the kind's protocol in `engines.base`."""
    provider, options = _split(kind, spec)
    return _checked(kind, provider, _factory(kind, provider)(manifest, options))


def build_engines(config: Mapping[str, object], manifest: Manifest) -> Engines:
    """Load the four engines named in `config`; an unknown kind or provider stops start-up."""
    unknown = sorted(set(config) - set(KINDS))
    missing = [kind for kind in KINDS if kind not in config]
    if unknown or missing:
        raise EngineConfigError(f"engine config: unknown kinds {unknown}, missing kinds {missing}")
    # Every provider is resolved before any model loads, so a typo fails in milliseconds.
    plan: dict[Kind, tuple[str, dict[str, object], Factory]] = {}
    for kind in KINDS:
        provider, options = _split(kind, config[kind])
        plan[kind] = (provider, options, _factory(kind, provider))

    def load(kind: Kind) -> object:
        provider, options, factory = plan[kind]
        return _checked(kind, provider, factory(manifest, options))

    # The casts are safe: `_checked` has matched each engine against its kind's protocol.
    with contextlib.ExitStack() as loaded:
        # Until all four load, a failure closes the ones already loaded (their thread pools).
        vad = cast(Vad, load("vad"))
        loaded.callback(vad.close)
        asr = cast(StreamingAsr, load("asr"))
        loaded.callback(asr.close)
        llm = cast(Llm, load("llm"))
        loaded.callback(llm.close)
        tts = cast(Tts, load("tts"))
        loaded.pop_all()
    return Engines(vad=vad, asr=asr, llm=llm, tts=tts)

"""Load the engine chain a connector node needs, from its settings and the local model manifest.

Blocking model loads run in a worker thread; a missing model stops start-up with an error that names
`make models`. Static prompts are synthesised here, before the node reports ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np

from avc.config import Settings
from avc.conversation.banking_responder import BankingServices
from avc.conversation.banking_responder import static_prompts as banking_static_prompts
from avc.conversation.chain import ChainDeps
from avc.conversation.prompts import PromptCache
from avc.conversation.responder import LlmResponder, RepeatResponder, Responder, ResponderFactory
from avc.media.resample import Resampler
from avc.metrics import Metrics
from banking.understanding import Semantic, load_semantic
from engines.base import Llm, Tts
from engines.fallback import FallbackLlm, FallbackTts
from engines.manifest import Manifest
from engines.registry import Engines, build_engines, load_engine
from engines.resilience import CircuitBreaker
from engines.vectors.qdrant import VectorStoreLocked

log = logging.getLogger(__name__)


def engine_config(settings: Settings) -> Mapping[str, object]:
    return {
        "vad": {"provider": "silero", "model": settings.vad_model},
        "asr": {"provider": "whisper", "model": settings.asr_model, "cpu_threads": settings.asr_threads},
        "llm": {"provider": "llama", "model": settings.llm_model, "n_threads": settings.llm_threads},
        "tts": {"provider": "piper", "model": settings.tts_model},
    }


def open_understanding(settings: Settings, manifest: Manifest, *, rebuild: bool = False) -> Semantic:
    """The semantic understander over the node's vector store (a folder, or a Qdrant server by URL), its index
    built if missing or stale (seconds); blocking, so call it in a thread."""
    vectors = {"url": settings.vectors_url} if settings.vectors_url else {"path": settings.vectors_path}
    try:
        semantic = load_semantic(manifest, model=settings.embed_model, vectors=vectors, rebuild=rebuild)
    except VectorStoreLocked as exc:
        # Another process on this machine holds the embedded store (a second node, `avc understand` during
        # `avc serve`): the same content indexed in memory reads the same, at the cost of seconds at start.
        log.warning("%s; indexing the same content in memory instead", exc)
        semantic = load_semantic(manifest, model=settings.embed_model, vectors={"path": ":memory:"})
    index = semantic.index
    log.info(
        "semantic understanding ready: %d examples, %d classes in %s (%s)",
        index.size,
        len(index.classes),
        index.collection,
        "built" if semantic.built else "current",
    )
    return semantic


def with_cloud_engines(settings: Settings, engines: Engines, manifest: Manifest, metrics: Metrics) -> Engines:
    """Put the configured cloud engines in front of the local ones, which stay loaded as the fallback."""

    def count(kind: str, primary: str, fallback: str) -> None:
        metrics.engine_fallbacks.labels(kind, primary, fallback).inc()

    def resampler(rate_in: int, rate_out: int) -> Callable[[np.ndarray], np.ndarray]:
        return Resampler(rate_in, rate_out).process

    llm, tts = engines.llm, engines.tts
    if settings.llm_provider == "openai":
        cloud_llm = cast(Llm, load_engine("llm", {"provider": "openai", "model": settings.openai_model}, manifest))
        llm = FallbackLlm(
            cloud_llm, engines.llm, CircuitBreaker(name="openai"), count, primary_name="openai", fallback_name="llama"
        )
    if settings.tts_provider == "elevenlabs":
        options: dict[str, object] = {"provider": "elevenlabs"}
        if settings.elevenlabs_voice:
            options["voice_id"] = settings.elevenlabs_voice
        cloud_tts = cast(Tts, load_engine("tts", options, manifest))
        tts = FallbackTts(
            cloud_tts,
            engines.tts,
            CircuitBreaker(name="elevenlabs"),
            count,
            resampler=resampler,
            primary_name="elevenlabs",
            fallback_name="piper",
        )
    return replace(engines, llm=llm, tts=tts)


def responder_factory(settings: Settings, engines: Engines) -> ResponderFactory:
    if settings.responder == "repeat":
        return RepeatResponder
    if settings.responder == "llm":

        def llm_responder(call_id: str, ani: str | None) -> Responder:
            return LlmResponder(engines.llm)

        return llm_responder
    raise ValueError(f"responder {settings.responder!r} is built by the banking setup")


async def build_chain(settings: Settings, metrics: Metrics, responders: ResponderFactory | None = None) -> ChainDeps:
    manifest = await asyncio.to_thread(Manifest.load, Path(settings.models_dir))
    engines = await asyncio.to_thread(build_engines, engine_config(settings), manifest)
    engines = with_cloud_engines(settings, engines, manifest, metrics)
    cleanup: Callable[[], Awaitable[None]] | None = None
    if responders is not None:
        factory = responders
    elif settings.responder == "banking":
        understanding = None
        if settings.understanding == "semantic":
            understanding = await asyncio.to_thread(open_understanding, settings, manifest)
        services = await BankingServices.connect(
            settings.pg_dsn,
            settings.redis_url,
            engines.llm if settings.banking_llm else None,
            Path(settings.journal_spool_dir),
            metrics,
            node=settings.node_id,
            max_call_s=settings.max_duration,
            semantic=understanding.understander if understanding else None,
            knowledge=understanding.knowledge if understanding else None,
        )
        factory = services.responder_factory(metrics)

        async def close_banking() -> None:
            await services.close()
            if understanding is not None:
                understanding.close()

        cleanup = close_banking

    else:
        factory = responder_factory(settings, engines)
    prompts = PromptCache(engines.tts)
    await prompts.warm(_static_prompts(settings, factory))
    log.info(
        "engine chain ready: %s, %s, %s, %s",
        settings.vad_model,
        settings.asr_model,
        settings.llm_model,
        settings.tts_model,
    )
    return ChainDeps(
        engines=engines,
        prompts=prompts,
        responder_factory=factory,
        metrics=metrics,
        cleanup=cleanup,
        no_input_s=settings.no_input_s,
    )


def _static_prompts(settings: Settings, factory: ResponderFactory) -> Sequence[str]:
    if settings.responder == "banking":
        # Building a banking responder would open a call record: its prompts are fixed text anyway.
        return banking_static_prompts()
    return factory("warm-up", None).static_prompts()

"""A GGUF chat model run in-process by llama.cpp (llama-cpp-python).

One llama.cpp context serves the whole process and is not thread-safe, so generations run one
at a time on a single-thread pool; each runs to completion (or until its consumer closes the
stream) in that thread and hands text pieces to the event loop as they are produced.

The context keeps the tokens it last evaluated, and llama.cpp re-evaluates only what follows
the longest common prefix with the next prompt: since every call's prompt starts with the same
system prompt, that prompt is evaluated once, not once per turn. With `prompt_cache_mb` > 0 a
RAM cache of recent contexts also covers prompts that alternate between system prompts (e.g.
the reply prompt and an understanding prompt). JSON output is constrained by a grammar built
from the caller's JSON schema.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

from llama_cpp import Llama
from llama_cpp.llama_cache import LlamaRAMCache
from llama_cpp.llama_types import CreateChatCompletionResponse, CreateChatCompletionStreamResponse

from engines.base import ChatMessage, JsonObject
from engines.errors import EngineInputError, LlmOutputError
from engines.manifest import Manifest
from engines.offload import InferencePool
from engines.options import parse_options

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LlamaOptions:
    model: str = "smollm2-135m"
    n_threads: int = 2
    n_ctx: int = 2048
    n_batch: int = 256
    prompt_cache_mb: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_threads < 1 or self.n_ctx < 256 or self.n_batch < 1 or self.prompt_cache_mb < 0:
            raise ValueError("need n_threads >= 1, n_ctx >= 256, n_batch >= 1, prompt_cache_mb >= 0")


class _CountingLlama(Llama):
    """Counts the tokens llama.cpp evaluates, which shows whether a prompt prefix was reused."""

    evaluated_tokens: int = 0

    def eval(self, tokens: Sequence[int]) -> None:
        self.evaluated_tokens += len(tokens)
        super().eval(tokens)


def _openai_messages(messages: Sequence[ChatMessage]) -> list[Any]:
    if not messages:
        raise EngineInputError("a chat needs at least one message")
    return [message.as_openai() for message in messages]


class LlamaLlm:
    """A GGUF model loaded once per process."""

    name: ClassVar[str] = "llama"  # the provider, as metrics and logs name it

    def __init__(self, model_path: Path, options: LlamaOptions) -> None:
        self.options = options
        self._llama = _CountingLlama(
            model_path=str(model_path),
            n_ctx=options.n_ctx,
            n_batch=options.n_batch,
            n_threads=options.n_threads,
            n_threads_batch=options.n_threads,
            seed=options.seed,
            verbose=False,
        )
        if options.prompt_cache_mb:
            self._llama.set_cache(LlamaRAMCache(capacity_bytes=options.prompt_cache_mb << 20))
        self._pool = InferencePool("llama", 1)

    @property
    def evaluated_tokens(self) -> int:
        """Tokens evaluated since load (prompt and generated); prompt prefixes reused are not counted."""
        return self._llama.evaluated_tokens

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> AsyncGenerator[str, None]:
        request = _openai_messages(messages)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        closed = threading.Event()

        def produce() -> None:
            # stream=True always returns the iterator form of the union.
            chunks = cast(
                Iterator[CreateChatCompletionStreamResponse],
                self._llama.create_chat_completion(
                    messages=request, stream=True, max_tokens=max_tokens, temperature=temperature, stop=list(stop)
                ),
            )
            for chunk in chunks:
                if closed.is_set():
                    break
                piece = chunk["choices"][0]["delta"].get("content")
                if isinstance(piece, str) and piece:
                    try:
                        loop.call_soon_threadsafe(pieces.put_nowait, piece)
                    except RuntimeError:  # the loop is closed: nobody is listening any more
                        break

        job = asyncio.ensure_future(self._pool.run(produce))
        # Queued after every piece the thread sent, so the consumer sees all of them first.
        job.add_done_callback(lambda _: pieces.put_nowait(None))
        try:
            while (piece := await pieces.get()) is not None:
                yield piece
            await job
        except ValueError as exc:  # llama.cpp's way of saying the prompt does not fit the context
            raise EngineInputError(f"llama: {exc}") from exc
        finally:
            # Stops the thread at its next token when the consumer closed the stream early.
            closed.set()
            if not job.done():
                job.add_done_callback(_log_failure)

    async def complete_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, max_tokens: int
    ) -> JsonObject:
        request = _openai_messages(messages)

        def complete() -> CreateChatCompletionResponse:
            # stream=False always returns the single-response form of the union.
            return cast(
                CreateChatCompletionResponse,
                self._llama.create_chat_completion(
                    messages=request,
                    max_tokens=max_tokens,
                    temperature=0.0,
                    response_format={"type": "json_object", "schema": dict(schema)},
                ),
            )

        try:
            response = await self._pool.run(complete)
        except ValueError as exc:
            raise EngineInputError(f"llama: {exc}") from exc
        choice = response["choices"][0]
        if choice["finish_reason"] == "length":
            raise LlmOutputError(f"JSON answer cut off at max_tokens={max_tokens}")
        try:
            value = json.loads(choice["message"]["content"] or "")
        except json.JSONDecodeError as exc:
            raise LlmOutputError(f"model returned invalid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise LlmOutputError(f"model returned JSON {type(value).__name__}, expected an object")
        return value

    def close(self) -> None:
        self._pool.close()


def _log_failure(job: asyncio.Future[None]) -> None:
    # Retrieves the exception of a generation nobody awaits any more, so it is logged once
    # here instead of as "exception was never retrieved".
    if not job.cancelled() and (exc := job.exception()) is not None:
        log.warning("abandoned llama generation failed: %r", exc)


def load(manifest: Manifest, options: Mapping[str, object]) -> LlamaLlm:
    """Registry factory: `{"llm": {"provider": "llama", "model": "qwen2.5-0.5b", "n_threads": 2}}`."""
    parsed = parse_options(LlamaOptions, options, "llm llama")
    return LlamaLlm(manifest.path(parsed.model), parsed)

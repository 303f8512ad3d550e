"""A cloud engine with a local engine behind it, so a caller never hears the cloud fail.

`FallbackLlm` and `FallbackTts` satisfy the same protocols as the engines they wrap. Each
request goes to the primary (cloud) engine while its `CircuitBreaker` allows; if the primary
fails with any `EngineError` before it produced output, the same request goes to the fallback
(local) engine and the caller only notices a slightly longer pause. While the breaker is open,
requests go straight to the fallback without waiting for the primary to time out.

A primary that fails AFTER output began is not replaced: the caller has already heard part of
the answer, and the fallback would start its own answer from the beginning, repeating words or
saying something different (an LLM does not continue another model's sentence, and which words
of a TTS text were already audible is unknown). The wrapper raises `StreamInterruptedError`
instead, and the dialogue ends the turn in its own way (e.g. a short apology, then listening).

For the breaker, only `EngineUnavailableError` is a failure of the provider; an unusable answer
(`LlmOutputError`) shows it is reachable, and rejected input says nothing about it either way.
`metrics_hook(kind, primary, fallback)` is called once per request the fallback served, so the
connector can count `avc_engine_fallbacks_total` without the engines importing it. An error that
does reach the caller names the provider that failed (`EngineError.provider`, read with
`failed_provider`): the primary for a broken stream, else the fallback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, TypeVar

from engines.base import ChatMessage, JsonObject, Llm, Pcm16, Tts
from engines.errors import EngineConfigError, EngineError, LlmOutputError
from engines.resilience import CircuitBreaker, EngineUnavailableError, StreamInterruptedError

log = logging.getLogger(__name__)

T = TypeVar("T")

FallbackHook = Callable[[str, str, str], None]
"""Called with (kind, primary name, fallback name) each time the fallback serves a request."""

ResamplerFactory = Callable[[int, int], Callable[[Pcm16], Pcm16]]
"""Given (input rate, output rate), returns a function converting consecutive chunks of one stream."""


def engine_name(engine: object) -> str:
    """An engine's `name` attribute (e.g. "openai"), else its class name."""
    name = getattr(engine, "name", None)
    return name if isinstance(name, str) else type(engine).__name__


def failed_provider(engine: object, error: BaseException) -> str:
    """The provider whose failure `error` is: the one it names (a fallback wrapper names the engine behind it
    that failed), else `engine`'s own name."""
    if isinstance(error, EngineError) and error.provider is not None:
        return error.provider
    return engine_name(engine)


def _blame(error: EngineError, provider: str) -> None:
    """Name the provider that raised `error`, unless an engine nested deeper already did."""
    if error.provider is None:
        error.provider = provider


class _Switch:
    """What both wrappers share: breaker bookkeeping, and noting each request the fallback serves."""

    def __init__(
        self, kind: str, primary: str, fallback: str, breaker: CircuitBreaker, hook: FallbackHook | None
    ) -> None:
        self.kind = kind
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker
        self._hook = hook

    def primary_answered(self) -> None:
        self.breaker.record_success()

    def primary_failed(self, error: EngineError) -> None:
        if isinstance(error, EngineUnavailableError):
            self.breaker.record_failure()
        elif isinstance(error, LlmOutputError):
            self.breaker.record_success()  # it answered, so it is reachable
        # Other errors (input rejected, possibly before any request was sent) say nothing about it.

    def falling_back(self, error: EngineError | None) -> None:
        if error is None:
            # The breaker logged when it opened; one line per request would flood the log.
            log.debug("%s %s circuit open: answering with %s", self.kind, self.primary, self.fallback)
        else:
            log.warning("%s %s failed (%s): answering with %s", self.kind, self.primary, error, self.fallback)
        if self._hook is None:
            return
        try:
            self._hook(self.kind, self.primary, self.fallback)
        except Exception:
            # Counting a fallback must never cost the caller the answer itself.
            log.exception("fallback metrics hook failed")

    async def stream(
        self, primary: Callable[[], AsyncGenerator[T, None]], fallback: Callable[[], AsyncGenerator[T, None]]
    ) -> AsyncGenerator[T, None]:
        """The primary's items, or the fallback's if the primary fails before its first item."""
        error: EngineError | None = None
        if self.breaker.allow():
            delivered = recorded = False
            async with aclosing(primary()) as items:
                try:
                    while True:
                        try:
                            item = await anext(items)
                        except StopAsyncIteration:
                            recorded = True
                            self.primary_answered()
                            return
                        except EngineError as exc:
                            recorded = True
                            self.primary_failed(exc)
                            _blame(exc, self.primary)
                            if delivered:
                                interrupted = StreamInterruptedError(
                                    f"{self.kind} {self.primary} failed after output began: {exc}"
                                )
                                interrupted.provider = exc.provider
                                raise interrupted from exc
                            error = exc
                            break
                        delivered = True
                        yield item
                finally:
                    # The consumer stopped early (barge-in) after output began: the primary was
                    # serving. A request cancelled before any output proves nothing either way.
                    if delivered and not recorded:
                        self.primary_answered()
        self.falling_back(error)
        try:
            async with aclosing(fallback()) as items:
                async for item in items:
                    yield item
        except EngineError as exc:
            _blame(exc, self.fallback)
            raise

    async def call(self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> T:
        """The primary's result, or the fallback's if the primary fails."""
        error: EngineError | None = None
        if self.breaker.allow():
            try:
                result = await primary()
            except EngineError as exc:
                self.primary_failed(exc)
                _blame(exc, self.primary)
                error = exc
            else:
                self.primary_answered()
                return result
        self.falling_back(error)
        try:
            return await fallback()
        except EngineError as exc:
            _blame(exc, self.fallback)
            raise


class FallbackLlm:
    """An `Llm` answering from `primary`, or from `fallback` when the primary is failing."""

    def __init__(
        self,
        primary: Llm,
        fallback: Llm,
        breaker: CircuitBreaker,
        metrics_hook: FallbackHook | None = None,
        *,
        primary_name: str | None = None,
        fallback_name: str | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker
        self._switch = _Switch(
            "llm", primary_name or engine_name(primary), fallback_name or engine_name(fallback), breaker, metrics_hook
        )

    @property
    def name(self) -> str:
        """Both providers: an error outside the engines' contract (not an `EngineError`) names neither."""
        return f"{self._switch.primary}+{self._switch.fallback}"

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> AsyncGenerator[str, None]:
        return self._switch.stream(
            lambda: self.primary.stream_chat(messages, max_tokens=max_tokens, temperature=temperature, stop=stop),
            lambda: self.fallback.stream_chat(messages, max_tokens=max_tokens, temperature=temperature, stop=stop),
        )

    async def complete_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, max_tokens: int
    ) -> JsonObject:
        return await self._switch.call(
            lambda: self.primary.complete_json(messages, schema, max_tokens=max_tokens),
            lambda: self.fallback.complete_json(messages, schema, max_tokens=max_tokens),
        )

    def close(self) -> None:
        try:
            self.primary.close()
        finally:
            self.fallback.close()


class FallbackTts:
    """A `Tts` speaking with `primary`, or with `fallback` when the primary is failing.

    Its chunks are always at the primary's `sample_rate`: a fallback voice at another rate
    (Piper at 22,050 Hz behind ElevenLabs at 8 kHz) needs a `resampler` factory, which the
    connector supplies from its own streaming resampler.
    """

    def __init__(
        self,
        primary: Tts,
        fallback: Tts,
        breaker: CircuitBreaker,
        metrics_hook: FallbackHook | None = None,
        *,
        resampler: ResamplerFactory | None = None,
        primary_name: str | None = None,
        fallback_name: str | None = None,
    ) -> None:
        if fallback.sample_rate != primary.sample_rate and resampler is None:
            raise EngineConfigError(
                f"fallback TTS runs at {fallback.sample_rate} Hz, the primary at {primary.sample_rate} Hz: "
                "pass a resampler"
            )
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker
        self._resampler = resampler
        self._switch = _Switch(
            "tts", primary_name or engine_name(primary), fallback_name or engine_name(fallback), breaker, metrics_hook
        )

    @property
    def name(self) -> str:
        """Both providers: an error outside the engines' contract (not an `EngineError`) names neither."""
        return f"{self._switch.primary}+{self._switch.fallback}"

    @property
    def sample_rate(self) -> int:
        return self.primary.sample_rate

    def stream(self, text: str) -> AsyncGenerator[Pcm16, None]:
        return self._switch.stream(lambda: self.primary.stream(text), lambda: self._fallback_stream(text))

    async def _fallback_stream(self, text: str) -> AsyncGenerator[Pcm16, None]:
        rate_in, rate_out = self.fallback.sample_rate, self.primary.sample_rate
        # A new converter per stream: it carries filter history from one chunk to the next.
        convert = None if rate_in == rate_out or self._resampler is None else self._resampler(rate_in, rate_out)
        async with aclosing(self.fallback.stream(text)) as chunks:
            async for chunk in chunks:
                yield chunk if convert is None else convert(chunk)

    def close(self) -> None:
        try:
            self.primary.close()
        finally:
            self.fallback.close()

"""Fail fast and typed when a remote engine misbehaves: error classes, a circuit breaker, retries.

A phone caller hears silence while an engine waits, so a cloud provider that is down must cost
as little time as possible before the call falls back to a local engine:

- `EngineUnavailableError` says the provider could not serve the request (network, timeout,
  HTTP 429/5xx, key refused) and whether trying again soon could help (`retryable`).
- `CircuitBreaker` stops sending requests to a provider after `failure_threshold` consecutive
  failures, so later calls go to the fallback at once instead of each waiting for a timeout;
  after `reset_timeout` seconds it lets ONE trial request through to find out whether the
  provider is back.
- `retry_stream` / `retry_call` repeat a failed attempt with jittered exponential backoff, but a
  stream only until its first item was delivered: once the caller may have heard words, a retry
  would speak them again, so a later failure is raised as it is.

Nothing here does I/O of its own; clock, sleep and jitter are injectable so tests need no timing.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from engines.errors import EngineError

log = logging.getLogger(__name__)

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Jitter = Callable[[], float]
"""Returns a number in [0, 1); `random.random` in production, a constant in tests."""


class EngineUnavailableError(EngineError):
    """The provider could not serve the request: network error, timeout, HTTP 429/5xx, key refused.

    `retryable` is True when trying again soon may succeed (connection refused, 429, 503, a
    timeout); `retry_after` is the delay in seconds the server asked for, when it said.
    """

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class StreamInterruptedError(EngineError):
    """A streamed answer failed after part of it had been delivered.

    Neither a retry nor a fallback engine can continue it without repeating or contradicting
    what the caller already heard, so the dialogue must end the turn itself (e.g. apologise).
    """


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker for one provider, shared by every call of the process.

    closed -> open after `failure_threshold` consecutive failures; open -> half-open once
    `reset_timeout` seconds have passed, where `allow()` admits one trial; the trial's success
    closes the breaker, its failure opens it again for another `reset_timeout`.

    A trial whose outcome never comes back (the call hung up mid-request) must not wedge the
    breaker half-open, so after another `reset_timeout` the next `allow()` starts a new trial.
    All methods run on the event loop thread, so no lock is needed.
    """

    def __init__(
        self, failure_threshold: int = 5, reset_timeout: float = 30.0, clock: Clock = time.monotonic, *, name: str = ""
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_timeout <= 0:
            raise ValueError(f"reset_timeout must be > 0, got {reset_timeout}")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.name = name
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started_at = 0.0

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose timeout has passed reports half-open."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """Whether a request may go to the provider now; in half-open state only one at a time."""
        now = self._clock()
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if now - self._opened_at < self.reset_timeout:
                return False
            log.info("circuit %s half-open: sending one trial request", self.name)
        elif now - self._trial_started_at < self.reset_timeout:
            return False  # the trial is still in flight
        self._state = BreakerState.HALF_OPEN
        self._trial_started_at = now
        return True

    def record_success(self) -> None:
        """The provider answered; an open breaker ignores answers to requests it let through earlier."""
        if self._state is BreakerState.HALF_OPEN:
            log.info("circuit %s closed: the trial request succeeded", self.name)
            self._state = BreakerState.CLOSED
        if self._state is BreakerState.CLOSED:
            self._failures = 0

    def record_failure(self) -> None:
        """The provider failed a request that `allow()` let through."""
        if self._state is BreakerState.OPEN:
            return  # a straggler from before opening; the open period is not extended
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            log.warning(
                "circuit %s open after %d consecutive failures: using the fallback for %.1f s",
                self.name,
                self._failures,
                self.reset_timeout,
            )
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to repeat a failed attempt.

    The n-th retry waits `min(max_delay, base_delay * 2 ** (n - 1))`, half of it fixed and half
    random ("equal jitter"), so calls that failed together do not retry in lockstep. A server's
    Retry-After longer than `max_delay` ends the retries: waiting that long on a phone line is
    worse than the fallback. `attempt_timeout` bounds each attempt until it delivers (the first
    item of a stream, the result of a call); None leaves that to the attempt itself.
    """

    max_attempts: int = 2
    base_delay: float = 0.1
    max_delay: float = 1.0
    attempt_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(f"need 0 <= base_delay <= max_delay, got {self.base_delay}, {self.max_delay}")
        if self.attempt_timeout is not None and self.attempt_timeout <= 0:
            raise ValueError(f"attempt_timeout must be > 0, got {self.attempt_timeout}")

    def delay_before_retry(self, attempt: int, error: EngineError, jitter: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when `error` must be raised."""
        if attempt >= self.max_attempts or not isinstance(error, EngineUnavailableError) or not error.retryable:
            return None
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        delay = backoff / 2 + backoff / 2 * jitter
        if error.retry_after is not None:
            if error.retry_after > self.max_delay:
                return None
            delay = max(delay, error.retry_after)
        return delay


async def retry_stream(
    open_stream: Callable[[], AsyncGenerator[T, None]],
    policy: RetryPolicy,
    *,
    label: str,
    sleep: Sleep = asyncio.sleep,
    jitter: Jitter = random.random,
) -> AsyncGenerator[T, None]:
    """Yield the items of `open_stream()`, opening it again after a retryable failure before its first item.

    Once an item was yielded, a failure is raised unchanged and never retried: a repeated
    stream would deliver (speak) the same beginning twice.
    """
    attempt = 0
    while True:
        attempt += 1
        stream = open_stream()
        try:
            try:
                async with asyncio.timeout(policy.attempt_timeout):
                    first = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                error: EngineError = EngineUnavailableError(
                    f"{label}: nothing within {policy.attempt_timeout} s", retryable=True
                )
                error.__cause__ = exc
            except EngineError as exc:
                error = exc
            else:
                yield first
                async for item in stream:
                    yield item
                return
        finally:
            await stream.aclose()
        await _wait_or_raise(policy, attempt, error, label, sleep, jitter)


async def retry_call(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    label: str,
    sleep: Sleep = asyncio.sleep,
    jitter: Jitter = random.random,
) -> T:
    """Await `call()`, calling it again after a retryable failure, up to `policy.max_attempts` times."""
    attempt = 0
    while True:
        attempt += 1
        try:
            async with asyncio.timeout(policy.attempt_timeout):
                return await call()
        except TimeoutError as exc:
            error: EngineError = EngineUnavailableError(
                f"{label}: no result within {policy.attempt_timeout} s", retryable=True
            )
            error.__cause__ = exc
        except EngineError as exc:
            error = exc
        await _wait_or_raise(policy, attempt, error, label, sleep, jitter)


async def _wait_or_raise(
    policy: RetryPolicy, attempt: int, error: EngineError, label: str, sleep: Sleep, jitter: Jitter
) -> None:
    delay = policy.delay_before_retry(attempt, error, jitter())
    if delay is None:
        raise error
    log.warning("%s: attempt %d failed (%s); retrying in %.3f s", label, attempt, error, delay)
    await sleep(delay)

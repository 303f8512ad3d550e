"""The circuit breaker and the retry helpers: fail fast, and never repeat what was already delivered.

Time is a fake clock and sleeping is recorded, not done, so nothing here depends on timing.
The streams fed to the retry helpers are scripted generators: they are the inputs, not the
code under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing

import pytest

from engines.errors import EngineError, EngineInputError
from engines.resilience import (
    BreakerState,
    CircuitBreaker,
    EngineUnavailableError,
    RetryPolicy,
    retry_call,
    retry_stream,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """Records requested delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def unavailable(retry_after: float | None = None) -> EngineUnavailableError:
    return EngineUnavailableError("test: HTTP 503 (system_busy)", retryable=True, retry_after=retry_after)


POLICY = RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0)


def state_of(breaker: CircuitBreaker) -> BreakerState:
    # Read through a call: mypy would otherwise keep an asserted state narrowed across allow()/record_*().
    return breaker.state


# -- circuit breaker ----------------------------------------------------------------------------------------------


def test_breaker_opens_after_five_consecutive_failures() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    for _ in range(4):
        assert breaker.allow()
        breaker.record_failure()
    assert state_of(breaker) is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert state_of(breaker) is BreakerState.OPEN
    assert not breaker.allow()


def test_a_success_resets_the_consecutive_failure_count() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    for _ in range(4):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(4):
        breaker.record_failure()
    assert state_of(breaker) is BreakerState.CLOSED
    assert breaker.consecutive_failures == 4


def test_open_breaker_half_opens_after_the_reset_timeout_and_admits_one_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=5, reset_timeout=30.0, clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 29.9
    assert state_of(breaker) is BreakerState.OPEN
    assert not breaker.allow()
    clock.now += 0.1
    assert state_of(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow(), "only one trial at a time"
    assert state_of(breaker) is BreakerState.HALF_OPEN


def test_successful_trial_closes_the_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=10.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 10.0
    assert breaker.allow()
    breaker.record_success()
    assert state_of(breaker) is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.allow() and breaker.allow()


def test_failed_trial_opens_the_breaker_for_another_full_timeout() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=10.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 10.0
    assert breaker.allow()
    clock.now += 3.0
    breaker.record_failure()
    assert state_of(breaker) is BreakerState.OPEN
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()


def test_a_trial_that_never_reports_is_replaced_after_another_timeout() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10.0, clock=clock)
    breaker.record_failure()
    clock.now += 10.0
    assert breaker.allow()  # this trial's call hangs up and never reports
    clock.now += 9.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()


def test_stragglers_do_not_change_an_open_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10.0, clock=clock)
    breaker.record_failure()
    clock.now += 5.0
    breaker.record_success()  # a request let through before the breaker opened
    breaker.record_failure()
    assert state_of(breaker) is BreakerState.OPEN
    clock.now += 5.0
    assert breaker.allow(), "the open period was not extended by the straggler"


@pytest.mark.parametrize(("threshold", "timeout"), [(0, 30.0), (5, 0.0)])
def test_breaker_rejects_meaningless_settings(threshold: int, timeout: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=threshold, reset_timeout=timeout)


# -- retry policy -------------------------------------------------------------------------------------------------


def test_backoff_doubles_per_attempt_with_equal_jitter_up_to_max_delay() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=0.5)
    assert [policy.delay_before_retry(n, unavailable(), 0.0) for n in (1, 2, 3, 4)] == pytest.approx(
        [0.05, 0.1, 0.2, 0.25]
    )
    assert [policy.delay_before_retry(n, unavailable(), 0.999999) for n in (1, 2, 3, 4)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.5], rel=1e-5
    )


def test_no_retry_after_the_last_attempt() -> None:
    assert RetryPolicy(max_attempts=2).delay_before_retry(2, unavailable(), 0.5) is None


@pytest.mark.parametrize(
    "error",
    [
        EngineUnavailableError("test: HTTP 401 (invalid_api_key)", retryable=False),
        EngineInputError("test: HTTP 422 (missing)"),
        EngineError("test: something else"),
    ],
)
def test_only_retryable_unavailability_is_retried(error: EngineError) -> None:
    assert POLICY.delay_before_retry(1, error, 0.5) is None


def test_retry_after_within_max_delay_is_honoured() -> None:
    assert POLICY.delay_before_retry(1, unavailable(retry_after=0.8), 0.0) == pytest.approx(0.8)


def test_retry_after_beyond_max_delay_ends_the_retries() -> None:
    assert POLICY.delay_before_retry(1, unavailable(retry_after=20.0), 0.0) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_delay": -0.1}, {"base_delay": 2.0, "max_delay": 1.0}, {"attempt_timeout": 0.0}],
)
def test_policy_rejects_meaningless_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# -- retry_stream -------------------------------------------------------------------------------------------------


class ScriptedStreams:
    """Attempt n fails with `failures[n]` after yielding `before[n]` items; later attempts succeed."""

    def __init__(self, failures: Sequence[EngineError], items: list[str], yielded_before_failure: int = 0) -> None:
        self.failures = failures
        self.items = items
        self.yielded_before_failure = yielded_before_failure
        self.opened = 0
        self.closed = 0

    def open(self) -> AsyncGenerator[str, None]:
        self.opened += 1
        return self._stream(self.opened - 1)

    async def _stream(self, attempt: int) -> AsyncGenerator[str, None]:
        try:
            if attempt < len(self.failures):
                for item in self.items[: self.yielded_before_failure]:
                    yield item
                raise self.failures[attempt]
            for item in self.items:
                yield item
        finally:
            self.closed += 1


async def collect(stream: AsyncGenerator[str, None], into: list[str]) -> list[str]:
    async with aclosing(stream) as items:
        async for item in items:
            into.append(item)
    return into


async def test_stream_is_retried_while_nothing_was_delivered() -> None:
    script = ScriptedStreams([unavailable(), unavailable()], ["Good", " morning"])
    sleeps = Sleeps()
    items = await collect(retry_stream(script.open, POLICY, label="test", sleep=sleeps, jitter=lambda: 0.0), [])
    assert items == ["Good", " morning"]
    assert script.opened == 3
    assert script.closed == 3, "every failed attempt is closed before the next one"
    assert sleeps.delays == pytest.approx([0.05, 0.1])


async def test_stream_failure_after_the_first_item_is_raised_without_retry() -> None:
    failure = unavailable()
    script = ScriptedStreams([failure], ["Your balance", " is"], yielded_before_failure=1)
    sleeps = Sleeps()
    delivered: list[str] = []
    with pytest.raises(EngineUnavailableError) as raised:
        await collect(retry_stream(script.open, POLICY, label="test", sleep=sleeps), delivered)
    assert raised.value is failure
    assert delivered == ["Your balance"]
    assert script.opened == 1
    assert sleeps.delays == []


async def test_stream_gives_up_after_max_attempts_with_the_last_error() -> None:
    errors = [unavailable(), unavailable(), unavailable()]
    script = ScriptedStreams(errors, ["never"])
    with pytest.raises(EngineUnavailableError) as raised:
        await collect(retry_stream(script.open, POLICY, label="test", sleep=Sleeps()), [])
    assert raised.value is errors[2]
    assert script.opened == 3


async def test_stream_non_retryable_error_is_raised_at_once() -> None:
    refused = EngineUnavailableError("test: HTTP 401 (invalid_api_key)", retryable=False)
    script = ScriptedStreams([refused], ["never"])
    with pytest.raises(EngineUnavailableError) as raised:
        await collect(retry_stream(script.open, POLICY, label="test", sleep=Sleeps()), [])
    assert raised.value is refused
    assert script.opened == 1


async def test_empty_stream_ends_without_retry() -> None:
    script = ScriptedStreams([], [])
    assert await collect(retry_stream(script.open, POLICY, label="test", sleep=Sleeps()), []) == []
    assert script.opened == 1


async def test_attempt_that_delivers_nothing_within_its_timeout_is_retried() -> None:
    never = asyncio.Event()
    opened = 0

    def open_stream() -> AsyncGenerator[str, None]:
        nonlocal opened
        opened += 1
        return stalled() if opened == 1 else answer()

    async def stalled() -> AsyncGenerator[str, None]:
        await never.wait()
        yield "too late"

    async def answer() -> AsyncGenerator[str, None]:
        yield "Hello"

    policy = RetryPolicy(max_attempts=2, attempt_timeout=0.05)
    assert await collect(retry_stream(open_stream, policy, label="test", sleep=Sleeps()), []) == ["Hello"]
    assert opened == 2


async def test_attempt_timeout_on_every_attempt_is_a_typed_error() -> None:
    async def stalled() -> AsyncGenerator[str, None]:
        await asyncio.Event().wait()
        yield "too late"

    policy = RetryPolicy(max_attempts=1, attempt_timeout=0.05)
    with pytest.raises(EngineUnavailableError, match=r"test: nothing within 0.05 s") as raised:
        await collect(retry_stream(stalled, policy, label="test"), [])
    assert raised.value.retryable


async def test_consumer_closing_early_closes_the_attempt() -> None:
    script = ScriptedStreams([], ["one", "two", "three"])
    stream = retry_stream(script.open, POLICY, label="test")
    assert await anext(stream) == "one"
    await stream.aclose()
    assert script.closed == 1


# -- retry_call ---------------------------------------------------------------------------------------------------


def scripted_call(failures: list[EngineError], result: str) -> tuple[Callable[[], asyncio.Future[str]], list[int]]:
    calls = [0]

    def call() -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if calls[0] < len(failures):
            future.set_exception(failures[calls[0]])
        else:
            future.set_result(result)
        calls[0] += 1
        return future

    return call, calls


async def test_call_is_retried_until_it_succeeds() -> None:
    call, calls = scripted_call([unavailable()], '{"intent": "balance"}')
    sleeps = Sleeps()
    assert await retry_call(call, POLICY, label="test", sleep=sleeps, jitter=lambda: 1.0) == '{"intent": "balance"}'
    assert calls == [2]
    assert sleeps.delays == pytest.approx([0.1])


async def test_call_gives_up_after_max_attempts() -> None:
    errors: list[EngineError] = [unavailable(), unavailable(), unavailable()]
    call, calls = scripted_call(errors, "never")
    with pytest.raises(EngineUnavailableError) as raised:
        await retry_call(call, POLICY, label="test", sleep=Sleeps())
    assert raised.value is errors[-1]
    assert calls == [3]


async def test_call_attempt_timeout_is_a_typed_error() -> None:
    async def stalled() -> str:
        await asyncio.Event().wait()
        return "too late"

    with pytest.raises(EngineUnavailableError, match="no result within"):
        await retry_call(stalled, RetryPolicy(max_attempts=1, attempt_timeout=0.05), label="test")

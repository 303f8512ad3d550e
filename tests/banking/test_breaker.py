"""Tests for banking.breaker: open after five failures in a row, half-open after 30 s, one trial decides."""

from __future__ import annotations

import pytest

from banking.breaker import CircuitBreaker, CircuitState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state_of(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state  # read afresh: a property changes between two reads


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_five_failures_in_a_row_open_the_circuit(clock: FakeClock) -> None:
    breaker = CircuitBreaker("bank", clock=clock)
    for _ in range(4):
        breaker.record_failure()
        assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()


def test_a_success_resets_the_count_of_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker("bank", clock=clock)
    for _ in range(4):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED


def test_after_30_s_one_trial_request_goes_through_and_its_success_closes(clock: FakeClock) -> None:
    breaker = CircuitBreaker("bank", clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # only one trial at a time
    breaker.record_success()
    assert state_of(breaker) is CircuitState.CLOSED and breaker.allow()


def test_a_failed_trial_opens_the_circuit_for_another_30_s(clock: FakeClock) -> None:
    breaker = CircuitBreaker("bank", clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 30
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    clock.now += 29
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("bank", failure_threshold=0)

"""A circuit breaker: stop calling a service that keeps failing, and try it again after a pause.

CLOSED: requests go through; `failure_threshold` failures in a row open the circuit.
OPEN: requests are refused at once (a caller hears "can't reach our systems" in milliseconds instead
of after every retry has timed out) until `reset_after_s` has passed.
HALF_OPEN: one trial request goes through; its success closes the circuit, its failure opens it again
for another `reset_after_s`. Other requests are refused while the trial is out.

Not thread-safe; meant for one event loop. The clock is injectable so tests need not wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Final

log = logging.getLogger(__name__)

DEFAULT_FAILURE_THRESHOLD: Final = 5
DEFAULT_RESET_AFTER_S: Final = 30.0


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_after_s: float = DEFAULT_RESET_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_after_s <= 0:
            raise ValueError(
                f"need failure_threshold >= 1 and reset_after_s > 0, got {failure_threshold}, {reset_after_s}"
            )
        self.name = name
        self._threshold = failure_threshold
        self._reset_after_s = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_out = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at < self._reset_after_s:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def allow(self) -> bool:
        """Whether a request may go out now. In HALF_OPEN, True once, for the trial request."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self._trial_out:
            self._trial_out = True
            log.info("circuit %s half-open: sending one trial request", self.name)
            return True
        return False

    def record_success(self) -> None:
        if self._opened_at is not None:
            log.info("circuit %s closed: the service answers again", self.name)
        self._failures = 0
        self._opened_at = None
        self._trial_out = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_out or (self._opened_at is None and self._failures >= self._threshold):
            log.warning(
                "circuit %s open after %d failures: refusing requests for %.0f s",
                self.name,
                self._failures,
                self._reset_after_s,
            )
            self._opened_at = self._clock()
        self._trial_out = False

"""What the double raises at a test: a script it cannot play, a call that went away, and its own crashes."""

from __future__ import annotations

from collections.abc import Sequence


class DoubleUsageError(RuntimeError):
    """A test scripted something the caller could not do at this point (BYE before the answer, ...)."""


class CallGone(RuntimeError):
    """The call ended (or OpenSIPS restarted) while a test was waiting for something on it."""


class DoubleInternalError(AssertionError):
    """The double crashed while serving (a bug in the double, not in the app): raised when it closes.

    The double keeps serving after a crash of its own so the test sees the app's side play out, and records each
    one in `internal_errors`; closing it with any recorded fails the test, so no test passes over a broken double.
    A test that provokes one on purpose inspects and clears `internal_errors` before the double closes.
    """

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__(f"the OpenSIPS double crashed {len(errors)} time(s): " + "; ".join(errors))
        self.errors = list(errors)


class ScriptRefused(RuntimeError):
    """The node's script answered the INVITE itself, before any UA session existed (no NEW event is raised)."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"{code}: {why}")
        self.code = code

"""Reading typed fields out of decoded JSON (a bank API answer, a stored call context).

`bool` is an `int` to Python, so a plain `isinstance` would take `true` for a count: these checks do not.
A wrong or missing field raises TypeError or KeyError for the caller to turn into its own error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def typed(raw: Mapping[str, Any], name: str, kind: type[T]) -> T:
    value = raw[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TypeError(f"{name} must be {kind.__name__}, got {type(value).__name__}")
    return value


def optional(raw: Mapping[str, Any], name: str, kind: type[T]) -> T | None:
    return None if raw.get(name) is None else typed(raw, name, kind)


def str_list(raw: Mapping[str, Any], name: str) -> list[str]:
    value = typed(raw, name, list)
    if not all(isinstance(item, str) for item in value):
        raise TypeError(f"{name} must be a list of strings")
    return list(value)

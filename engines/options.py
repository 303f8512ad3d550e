"""Turn a provider's options from configuration into its typed, frozen options dataclass.

Configuration arrives as plain mappings (TOML, YAML, environment); a typo in an option name or
a string where a number belongs must stop start-up with a message naming the provider and the
option, rather than be silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from engines.errors import EngineConfigError

T = TypeVar("T")


def _accepts(annotation: Any, value: object) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        # An integer is a fine float in a config file ("temperature = 0").
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    raise TypeError(f"unsupported option type {annotation!r}")


def parse_options(cls: type[T], raw: Mapping[str, object], provider: str) -> T:
    """Build the options dataclass `cls` from `raw`, refusing unknown names and wrong types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise EngineConfigError(
            f"{provider}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    for name, value in raw.items():
        if not _accepts(hints[name], value):
            raise EngineConfigError(f"{provider}: option {name!r} must be {hints[name]}, got {value!r}")
    try:
        return cls(**raw)
    except (TypeError, ValueError) as exc:
        raise EngineConfigError(f"{provider}: {exc}") from None

"""Provider options from configuration: typos and wrong types stop start-up with a clear message."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from engines.errors import EngineConfigError
from engines.options import parse_options


@dataclass(frozen=True, slots=True)
class _Options:
    model: str = "m"
    threads: int = 1
    temperature: float = 0.5
    scale: float | None = None

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError("threads must be >= 1")


def test_defaults_apply_when_nothing_is_configured() -> None:
    assert parse_options(_Options, {}, "asr x") == _Options()


def test_an_integer_is_accepted_where_a_float_is_expected() -> None:
    assert parse_options(_Options, {"temperature": 0, "scale": 2}, "asr x") == _Options(temperature=0, scale=2)


def test_unknown_option_names_the_provider_and_the_known_options() -> None:
    with pytest.raises(EngineConfigError, match=r"asr x: unknown option\(s\) thread; known: model, scale"):
        parse_options(_Options, {"thread": 2}, "asr x")


@pytest.mark.parametrize("value", ["2", 2.0, True, None])
def test_wrong_type_is_refused(value: object) -> None:
    with pytest.raises(EngineConfigError, match="'threads'"):
        parse_options(_Options, {"threads": value}, "asr x")


def test_value_rejected_by_the_dataclass_is_a_config_error() -> None:
    with pytest.raises(EngineConfigError, match="threads must be >= 1"):
        parse_options(_Options, {"threads": 0}, "asr x")

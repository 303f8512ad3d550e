"""The intents as the conversation designers describe them: `banking/content/intents.yaml`.

Each intent has its name (one of `Intent`), the authentication it needs, what the bot does with it and
example phrasings; the semantic understander classifies a caller's words by their nearest examples. The
file is data a designer edits, not code: after an edit, `avc reindex` (or the next start) rebuilds the
index. A file that names an unknown intent, misses one, or repeats an example is refused at load, with
the line's problem named, so a typo never silently shrinks what the line understands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from banking.intents import Expect, Intent

CONTENT_DIR: Final = Path(__file__).resolve().parent / "content"
DEFAULT_INTENTS: Final = CONTENT_DIR / "intents.yaml"
AUTH_LEVELS: Final = ("none", "verified")
# Intents the understander never names: digits and dates are read by rules, knowledge by its own entries.
NOT_DESCRIBED: Final = frozenset({Intent.DIGITS, Intent.DATE, Intent.KNOWLEDGE})
ANY_EXPECT: Final = "any"
MAX_EXAMPLE_CHARS: Final = 300


class ContentError(ValueError):
    """A designer's file that cannot be used as it stands."""


@dataclass(frozen=True, slots=True)
class IntentDescription:
    intent: Intent
    auth: str
    says: str
    examples: tuple[str, ...]
    expect: str = ANY_EXPECT  # "yes_no": the examples count only when a yes/no question was asked


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContentError(f"{path}: {exc}") from exc


def text_list(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = raw.get(key)
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise ContentError(f"{where}: '{key}' must be a non-empty list of texts")
    too_long = [v for v in values if len(v) > MAX_EXAMPLE_CHARS]
    if too_long:
        raise ContentError(f"{where}: '{key}' has a text over {MAX_EXAMPLE_CHARS} characters: {too_long[0][:40]!r}...")
    return tuple(" ".join(v.split()) for v in values)


def text_field(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ContentError(f"{where}: '{key}' must be a non-empty text")
    return " ".join(value.split())


class IntentCatalog:
    """Every intent the understander may name, with its examples; owns nothing but the parsed file."""

    def __init__(self, descriptions: Sequence[IntentDescription]) -> None:
        self.descriptions = tuple(descriptions)
        self.by_intent: Mapping[Intent, IntentDescription] = {d.intent: d for d in self.descriptions}

    @classmethod
    def load(cls, path: Path = DEFAULT_INTENTS) -> IntentCatalog:
        raw = read_yaml(path)
        entries = raw.get("intents") if isinstance(raw, dict) else None
        if not isinstance(entries, list):
            raise ContentError(f"{path}: expected a top-level 'intents' list")
        descriptions: list[IntentDescription] = []
        seen_examples: dict[str, str] = {}
        for number, entry in enumerate(entries, 1):
            where = f"{path}: intent #{number}"
            if not isinstance(entry, dict):
                raise ContentError(f"{where}: expected a mapping")
            name = text_field(entry, "name", where)
            try:
                intent = Intent(name)
            except ValueError:
                raise ContentError(f"{where}: unknown intent {name!r}") from None
            if intent in NOT_DESCRIBED:
                raise ContentError(f"{where}: {name} is read by rules or the knowledge base, not by examples")
            where = f"{path}: intent {name}"
            auth = text_field(entry, "auth", where)
            if auth not in AUTH_LEVELS:
                raise ContentError(f"{where}: auth must be one of {AUTH_LEVELS}, got {auth!r}")
            expect = str(entry.get("expect", ANY_EXPECT))
            if expect not in (ANY_EXPECT, Expect.YES_NO.value):
                raise ContentError(f"{where}: expect must be '{ANY_EXPECT}' or '{Expect.YES_NO.value}'")
            examples = text_list(entry, "examples", where)
            for example in examples:
                key = example.lower()
                if key in seen_examples:
                    raise ContentError(f"{where}: example {example!r} is also under {seen_examples[key]}")
                seen_examples[key] = name
            descriptions.append(IntentDescription(intent, auth, text_field(entry, "says", where), examples, expect))
        named = {d.intent for d in descriptions}
        if len(named) != len(descriptions):
            raise ContentError(f"{path}: an intent is described twice")
        missing = sorted(i.value for i in Intent if i not in NOT_DESCRIBED and i not in named)
        if missing:
            raise ContentError(f"{path}: intents without examples: {', '.join(missing)}")
        return cls(descriptions)

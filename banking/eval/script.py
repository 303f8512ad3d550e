"""The scripted dialogues of the evaluation set (`dialogues.json`), read and checked into dataclasses.

A dialogue is a caller (calling number, then turns) and what must come of it:

    {"id": "delivery-alice", "category": "happy_path", "ani": "+12025550101",
     "turns": [{"say": "where is my card"}, {"say": "March 5th, 1980"}, {"press": "1881"},
               {"say": "no thanks, bye"}],
     "expect": {"served": ["delivery_status"], "end": "hangup", "verified": true,
                "facts": ["November 24, 2026"], "never_say": ["Harbor Hardware"]}}

Turns: `say` (recognised speech; "" is silence), `press` (keypad keys), `press_otp` (the one-time code
the bank just texted), and `barge_in`: speech that cut the last reply short after `heard` characters.
`secrets` lists what the caller says aloud that must never be stored or shown to a model (a PIN).

Expectations: `served`, the banking operations done, in order (audit rows with outcome ok: a read like
"balance" or a change like "block_card"); `end`: "hangup", "transfer:<reason>" or "open" (the script
ends with the call still going); `facts`, strings that must appear in the bot's replies; `never_say`,
strings that must not; `verified` and `locked` (voice access locked afterwards), when given.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

DEFAULT_SET: Final = Path(__file__).resolve().parent / "dialogues.json"
SET_VERSION: Final = 1
_TURN_KINDS: Final = frozenset({"say", "press", "press_otp", "barge_in"})
_EXPECT_KEYS: Final = frozenset({"served", "end", "facts", "never_say", "verified", "locked"})


class ScriptError(ValueError):
    """The dialogue set is malformed; the message says where."""


@dataclass(frozen=True, slots=True)
class ScriptTurn:
    kind: str  # say, press, press_otp or barge_in
    text: str = ""  # what is said (say, barge_in) or pressed (press)
    heard: int = 0  # barge_in: characters of the last reply played before the caller cut in


@dataclass(frozen=True, slots=True)
class Expected:
    served: tuple[str, ...]
    end: str
    facts: tuple[str, ...] = ()
    never_say: tuple[str, ...] = ()
    verified: bool | None = None
    locked: bool | None = None


@dataclass(frozen=True, slots=True)
class Script:
    id: str
    category: str
    ani: str | None
    turns: tuple[ScriptTurn, ...]
    expect: Expected
    secrets: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class DialogueSet:
    today: dt.date
    scripts: tuple[Script, ...]


def _turn(raw: Any, where: str) -> ScriptTurn:
    if not isinstance(raw, dict) or len(set(raw) & _TURN_KINDS) != 1:
        raise ScriptError(f"{where}: a turn needs exactly one of {sorted(_TURN_KINDS)}")
    if "press_otp" in raw:
        return ScriptTurn("press_otp")
    if "barge_in" in raw:
        heard = raw.get("heard")
        if not isinstance(raw["barge_in"], str) or not isinstance(heard, int) or heard < 0:
            raise ScriptError(f"{where}: barge_in needs the text said and `heard`, a character count")
        return ScriptTurn("barge_in", raw["barge_in"], heard)
    kind = "say" if "say" in raw else "press"
    if not isinstance(raw[kind], str) or (kind == "press" and not raw[kind]):
        raise ScriptError(f"{where}: {kind} needs a string")
    return ScriptTurn(kind, raw[kind])


def _strings(raw: dict[str, Any], name: str, where: str) -> tuple[str, ...]:
    value = raw.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ScriptError(f"{where}: {name} must be a list of strings")
    return tuple(value)


def _optional_bool(raw: dict[str, Any], name: str, where: str) -> bool | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, bool):
        raise ScriptError(f"{where}: {name} must be true or false")
    return value


def _expected(raw: Any, where: str) -> Expected:
    if not isinstance(raw, dict) or not set(raw) <= _EXPECT_KEYS:
        raise ScriptError(f"{where}: expect takes only {sorted(_EXPECT_KEYS)}")
    end = raw.get("end")
    if not isinstance(end, str) or not (end in ("hangup", "open") or end.startswith("transfer:")):
        raise ScriptError(f"{where}: end must be hangup, open or transfer:<reason>")
    return Expected(
        served=_strings(raw, "served", where),
        end=end,
        facts=_strings(raw, "facts", where),
        never_say=_strings(raw, "never_say", where),
        verified=_optional_bool(raw, "verified", where),
        locked=_optional_bool(raw, "locked", where),
    )


def _script(raw: Any, index: int) -> Script:
    where = f"dialogue #{index}"
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise ScriptError(f"{where}: needs an id")
    where = f"dialogue {raw['id']!r}"
    ani = raw.get("ani")
    turns = raw.get("turns")
    if ani is not None and not isinstance(ani, str):
        raise ScriptError(f"{where}: ani must be a string or null")
    if not isinstance(turns, list) or not turns:
        raise ScriptError(f"{where}: needs turns")
    return Script(
        id=raw["id"],
        category=str(raw.get("category", "other")),
        ani=ani,
        turns=tuple(_turn(turn, f"{where} turn {number}") for number, turn in enumerate(turns, 1)),
        expect=_expected(raw.get("expect"), where),
        secrets=_strings(raw, "secrets", where),
    )


def load(path: Path = DEFAULT_SET) -> DialogueSet:
    """Read and check a dialogue set; `ScriptError` says what is wrong and where."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ScriptError(f"{path}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("version") != SET_VERSION or not isinstance(raw.get("dialogues"), list):
        raise ScriptError(f"{path}: expected {{'version': {SET_VERSION}, 'today': ..., 'dialogues': [...]}}")
    try:
        today = dt.date.fromisoformat(str(raw.get("today")))
    except ValueError as exc:
        raise ScriptError(f"{path}: today must be a YYYY-MM-DD date") from exc
    scripts = tuple(_script(item, index) for index, item in enumerate(raw["dialogues"], 1))
    ids = [script.id for script in scripts]
    if len(set(ids)) != len(ids):
        raise ScriptError(f"{path}: dialogue ids must be unique")
    return DialogueSet(today, scripts)

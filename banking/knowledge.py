"""The bank's approved answers: `banking/content/knowledge.yaml`, answered by retrieval, spoken verbatim.

Each entry has an id, a title, the ways callers ask it (the understander's examples for that entry) and
the answer the bank approved. The line speaks the answer exactly as written, never generated text, and
the journal records which entry was used. `offer_agent` marks answers that say this line cannot do it,
after which the caller is offered a person. The answers are checked at load for what a speech line must
never say (digit strings a redactor would take for a card number or a code).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from banking.intent_catalog import CONTENT_DIR, ContentError, read_yaml, text_field, text_list

DEFAULT_KNOWLEDGE: Final = CONTENT_DIR / "knowledge.yaml"
ENTRY_ID_RE: Final = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
MAX_ANSWER_CHARS: Final = 600  # about 40 s of speech: longer is a leaflet, not a phone answer
_DIGIT_RUN_RE: Final = re.compile(r"\d{4,}")


@dataclass(frozen=True, slots=True)
class KnowledgeEntry:
    id: str
    title: str
    questions: tuple[str, ...]
    answer: str
    offer_agent: bool = False


class KnowledgeBase:
    """The approved answers by id; owns nothing but the parsed file."""

    def __init__(self, entries: Sequence[KnowledgeEntry]) -> None:
        self.entries = tuple(entries)
        self.by_id: Mapping[str, KnowledgeEntry] = {entry.id: entry for entry in self.entries}

    def answer(self, entry_id: str) -> KnowledgeEntry | None:
        return self.by_id.get(entry_id)

    @classmethod
    def load(cls, path: Path = DEFAULT_KNOWLEDGE) -> KnowledgeBase:
        raw = read_yaml(path)
        items = raw.get("entries") if isinstance(raw, dict) else None
        if not isinstance(items, list) or not items:
            raise ContentError(f"{path}: expected a non-empty top-level 'entries' list")
        entries: list[KnowledgeEntry] = []
        for number, item in enumerate(items, 1):
            where = f"{path}: entry #{number}"
            if not isinstance(item, dict):
                raise ContentError(f"{where}: expected a mapping")
            entry_id = text_field(item, "id", where)
            if not ENTRY_ID_RE.fullmatch(entry_id):
                raise ContentError(f"{where}: id {entry_id!r} must be kebab-case (a-z, 0-9, '-')")
            where = f"{path}: entry {entry_id}"
            answer = text_field(item, "answer", where)
            if len(answer) > MAX_ANSWER_CHARS:
                raise ContentError(f"{where}: the answer is over {MAX_ANSWER_CHARS} characters")
            if _DIGIT_RUN_RE.search(answer):
                raise ContentError(f"{where}: the answer has a run of four or more digits; write numbers as words")
            offer_agent = item.get("offer_agent", False)
            if not isinstance(offer_agent, bool):
                raise ContentError(f"{where}: offer_agent must be true or false")
            entries.append(
                KnowledgeEntry(
                    entry_id, text_field(item, "title", where), text_list(item, "questions", where), answer, offer_agent
                )
            )
        ids = [entry.id for entry in entries]
        duplicated = sorted({entry_id for entry_id in ids if ids.count(entry_id) > 1})
        if duplicated:
            raise ContentError(f"{path}: ids used twice: {', '.join(duplicated)}")
        return cls(entries)

"""`avc understand` and `avc reindex`: the conversation designers' tools.

`avc understand` reads utterances as a call would (the guard, a date where one was asked, then the node's
understanding chain) and writes one JSON line each: the intent, the confidence, which understander
answered, the knowledge entry and its approved answer if any, and the latency. Utterances come as
arguments, or as JSON lines `{"text": ..., "expect": ...}` (or plain lines) on stdin. The LLM is left out
unless `--llm` is given (it takes seconds to load): a line no other understander reads says so.

`avc reindex` rebuilds the vector index from banking/content/*.yaml and prints the cross-validated figures
of the examples as one JSON line, so a designer sees at once whether an edit blurred two intents.

Both open the node's vector store; an embedded store that a running `avc serve` holds is locked, so they
fall back to a private in-memory index of the same content (a warning says so).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

from avc.config import Settings
from avc.conversation.engine_setup import engine_config, open_understanding
from banking.intents import Expect, Understander
from banking.llm_understander import LlmUnderstander
from banking.understanding import Semantic, interpret, product_chain
from engines.base import Llm
from engines.manifest import Manifest
from engines.registry import load_engine

log = logging.getLogger(__name__)


class UtteranceError(ValueError):
    """An input line that is not an utterance."""


def utterances(args: Sequence[str], expect: Expect, stdin: TextIO) -> Iterator[tuple[str, Expect]]:
    """The arguments, or else stdin's lines: JSON objects with "text" (and optionally "expect"), or plain text."""
    if args:
        for text in args:
            yield text, expect
        return
    for number, line in enumerate(stdin, 1):
        line = line.strip()
        if not line:
            continue
        if not line.startswith("{"):
            yield line, expect
            continue
        try:
            raw = json.loads(line)
            text = raw["text"]
            line_expect = Expect(raw.get("expect", expect.value))
        except (ValueError, KeyError, TypeError) as exc:
            raise UtteranceError(f"stdin line {number}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(text, str):
            raise UtteranceError(f"stdin line {number}: text must be a string")
        yield text, line_expect


async def understand_lines(
    lines: Iterable[tuple[str, Expect]], understander: Understander, semantic: Semantic | None, out: TextIO
) -> int:
    count = 0
    for text, expect in lines:
        began = time.perf_counter()
        reading = await interpret(text, expect, understander)
        ms = (time.perf_counter() - began) * 1000
        understanding = reading.understanding
        record: dict[str, Any] = {
            "text": text,
            "expect": expect.value,
            "intent": understanding.intent.value if understanding else "not_understood",
            "confidence": round(understanding.confidence, 3) if understanding else None,
            "understander": reading.source or None,
            "entry": understanding.slots.entry if understanding else None,
            "angry": understanding.angry if understanding else False,
            "ms": round(ms, 2),
        }
        if understanding and understanding.slots.entry and semantic is not None:
            entry = semantic.knowledge.answer(understanding.slots.entry)
            record["answer"] = entry.answer if entry else None
        print(json.dumps(record), file=out, flush=True)
        count += 1
    return count


async def understand(
    settings: Settings, args: Sequence[str], expect: Expect, *, with_llm: bool, stdin: TextIO, out: TextIO
) -> int:
    manifest = await asyncio.to_thread(Manifest.load, Path(settings.models_dir))
    semantic = None
    if settings.understanding == "semantic":
        semantic = await asyncio.to_thread(open_understanding, settings, manifest)
    llm: Llm | None = None
    try:
        model = None
        if with_llm:
            loaded = await asyncio.to_thread(load_engine, "llm", engine_config(settings)["llm"], manifest)
            llm = cast(Llm, loaded)  # load_engine checked it against the Llm protocol
            model = LlmUnderstander(llm)
            await model.warm()
        chain = product_chain(semantic.understander if semantic else None, model)
        await understand_lines(utterances(args, expect, stdin), chain, semantic, out)
    finally:
        if llm is not None:
            llm.close()
        if semantic is not None:
            semantic.close()
    return 0


def reindex(settings: Settings, out: TextIO) -> int:
    manifest = Manifest.load(Path(settings.models_dir))
    began = time.perf_counter()
    semantic = open_understanding(settings, manifest, rebuild=True)
    try:
        built_s = time.perf_counter() - began
        check = semantic.index.cross_validate()
        record = {
            "collection": semantic.index.collection,
            "store": settings.vectors_url or settings.vectors_path,
            "examples": semantic.index.size,
            "classes": len(semantic.index.classes),
            "knowledge_entries": len(semantic.knowledge.entries),
            "built_s": round(built_s, 2),
            "cross_validated": {
                "accuracy": round(check.accuracy, 4),
                "head_accuracy": round(check.head_accuracy, 4),
                "neighbour_accuracy": round(check.neighbour_accuracy, 4),
                "answered": round(check.answered, 4),
                "answered_accuracy": round(check.answered_accuracy, 4),
            },
        }
        print(json.dumps(record), file=out)
    finally:
        semantic.close()
    return 0

"""Wrappers that let the evaluation see what happens inside a turn: every prompt sent, which understander answered.

Both pass everything through unchanged; they only keep a record.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from banking.intents import Expect, Understander, Understanding
from engines.base import ChatMessage, JsonObject, Llm


class RecordingLlm:
    """An `Llm` that keeps the text of every message of every request, then asks the real model."""

    def __init__(self, llm: Llm) -> None:
        self._llm = llm
        self.prompts: list[str] = []  # one entry per request: its messages joined
        self.answers: list[JsonObject] = []  # what `complete_json` returned, in order

    @property
    def calls(self) -> int:
        return len(self.prompts)

    def _record(self, messages: Sequence[ChatMessage]) -> None:
        self.prompts.append("\n".join(message.content for message in messages))

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> AsyncGenerator[str, None]:
        self._record(messages)
        return self._llm.stream_chat(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)

    async def complete_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, max_tokens: int
    ) -> JsonObject:
        self._record(messages)
        answer = await self._llm.complete_json(messages, schema, max_tokens=max_tokens)
        self.answers.append(answer)
        return answer

    def close(self) -> None:
        self._llm.close()


@dataclass
class CountingUnderstander:
    """An `Understander` that counts how often it was asked and how often it answered."""

    inner: Understander
    asked: int = 0
    answered: int = 0
    texts: list[str] = field(default_factory=list)

    async def understand(self, text: str, expect: Expect) -> Understanding | None:
        self.asked += 1
        self.texts.append(text)
        understanding = await self.inner.understand(text, expect)
        self.answered += understanding is not None
        return understanding

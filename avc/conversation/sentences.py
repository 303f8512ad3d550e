"""Cut streamed LLM text into sentences for TTS, so the first sentence is spoken while the rest is generated.

A boundary is sentence punctuation followed by white space (or the end of the stream). Decimal numbers
("1.5"), common abbreviations ("Mr.", "e.g.") and initials do not end a sentence. A very short first
fragment ("Sure.") is kept on its own: speaking it early is exactly what lowers the caller's wait.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "no", "vs", "etc", "e.g", "i.e", "approx", "jan", "feb"})
_BOUNDARY = re.compile(r"([.!?;:]+)[\"')\]]*\s+")
MAX_SENTENCE_CHARS = 300  # a run-on answer is cut at a comma or space so TTS never waits for a huge chunk


class SentenceSplitter:
    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        out: list[str] = []
        start = 0
        for match in _BOUNDARY.finditer(self._buffer):
            end = match.end()
            candidate = self._buffer[start:end].strip()
            if self._is_abbreviation(candidate):
                continue
            if candidate:
                out.append(candidate)
            start = end
        self._buffer = self._buffer[start:]
        while len(self._buffer) > MAX_SENTENCE_CHARS:
            cut = max(self._buffer.rfind(", ", 0, MAX_SENTENCE_CHARS), self._buffer.rfind(" ", 0, MAX_SENTENCE_CHARS))
            cut = cut if cut > 0 else MAX_SENTENCE_CHARS
            out.append(self._buffer[: cut + 1].strip())
            self._buffer = self._buffer[cut + 1 :]
        return out

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []

    @staticmethod
    def _is_abbreviation(candidate: str) -> bool:
        if not candidate.endswith("."):
            return False
        words = candidate[:-1].split()
        if not words:
            return False
        last = words[-1].lower()
        return last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())


async def sentences_of(pieces: AsyncIterator[str]) -> AsyncIterator[str]:
    """Sentences from a stream of text pieces, as soon as each is complete."""
    splitter = SentenceSplitter()
    async for piece in pieces:
        for sentence in splitter.feed(piece):
            yield sentence
    for sentence in splitter.flush():
        yield sentence

"""Synthesised speech kept for reuse: static prompts are spoken from memory, not re-synthesised per call.

Entries are 8 kHz int16, ready for G.711, so replaying a prompt costs one encode. Responders name their
static prompts (greeting, "please enter ...") and the connector synthesises them once at start-up, before it
reports ready; any other sentence that recurs is kept too, within a bounded LRU.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from avc.media.audio_format import LINE_RATE
from avc.media.resample import Resampler
from engines.base import Tts

log = logging.getLogger(__name__)


class PromptCache:
    def __init__(self, tts: Tts, max_entries: int = 256) -> None:
        self._tts = tts
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._max = max_entries
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> np.ndarray | None:
        audio = self._entries.get(text)
        if audio is not None:
            self._entries.move_to_end(text)
            self.hits += 1
        else:
            self.misses += 1
        return audio

    def put(self, text: str, audio8k: np.ndarray) -> None:
        self._entries[text] = audio8k
        self._entries.move_to_end(text)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def put_synthesized(self, text: str, audio: np.ndarray, rate: int) -> None:
        """Keep audio that was synthesised for playout anyway, converted to the cache's 8 kHz."""
        self.put(text, audio if rate == LINE_RATE else Resampler(rate, LINE_RATE).process(audio))

    async def synthesize(self, text: str) -> np.ndarray:
        cached = self.get(text)
        if cached is not None:
            return cached
        resampler = Resampler(self._tts.sample_rate, LINE_RATE)
        chunks = [resampler.process(chunk) async for chunk in self._tts.stream(text)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        self.put(text, audio)
        return audio

    async def warm(self, texts: Iterable[str]) -> None:
        for text in texts:
            await self.synthesize(text)
        log.info("prompt cache warmed with %d prompts", len(self._entries))

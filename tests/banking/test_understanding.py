"""Tests for banking.understanding's speculative reading: a turn's words understood before the turn is over."""

from __future__ import annotations

import asyncio

from banking.fastpath import FastPathUnderstander
from banking.intents import Expect, Intent, Prefetching
from banking.understanding import SpeculativeUnderstander


async def test_a_reading_started_on_the_speculative_words_is_the_one_the_turn_gets() -> None:
    speculative = SpeculativeUnderstander(FastPathUnderstander())
    assert isinstance(speculative, Prefetching)
    speculative.prefetch("where is my card", Expect.FREE)
    await asyncio.sleep(0)
    understanding = await speculative.understand("where is my card", Expect.FREE)
    assert understanding is not None and understanding.intent is Intent.CARD_DELIVERY and speculative.reused == 1
    # Other words, or the same words after another question, are read afresh.
    assert await speculative.understand("where is my card", Expect.FREE) is not None and speculative.reused == 1
    speculative.prefetch("yes", Expect.FREE)
    reading = await speculative.understand("yes", Expect.YES_NO)
    assert reading is not None and reading.intent is Intent.YES and speculative.reused == 1


async def test_only_the_newest_speculations_are_kept() -> None:
    speculative = SpeculativeUnderstander(FastPathUnderstander(), keep=2)
    for text in ("lock my card", "unlock my card", "what's my balance"):
        speculative.prefetch(text, Expect.FREE)
    assert await speculative.understand("lock my card", Expect.FREE) is not None
    assert speculative.reused == 0  # the oldest was dropped to make room
    assert await speculative.understand("what's my balance", Expect.FREE) is not None and speculative.reused == 1
    speculative.prefetch("   ", Expect.FREE)  # nothing to read: nothing started
    assert speculative.reused == 1

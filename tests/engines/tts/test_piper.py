"""Piper streams int16 audio sentence by sentence, of plausible length, and stops when closed."""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt
import pytest

from engines.errors import EngineInputError
from tests.engines.speech import rms_dbfs

pytest.importorskip("piper", reason="the `local` extra (piper-tts) is not installed")
from engines.tts.piper import PiperTts

pytestmark = pytest.mark.models

TWO_SENTENCES = "Your card ending in four two has been blocked. A new card will arrive within five working days."


async def synthesise(voice: PiperTts, text: str) -> list[npt.NDArray[np.int16]]:
    return [chunk async for chunk in voice.stream(text)]


async def test_streams_one_int16_chunk_per_sentence_at_the_voice_rate(voice: PiperTts) -> None:
    chunks = await synthesise(voice, TWO_SENTENCES)
    assert voice.sample_rate == 22_050
    assert len(chunks) == 2
    for chunk in chunks:
        assert chunk.dtype == np.int16 and chunk.ndim == 1
        assert rms_dbfs(chunk) > -30.0  # audible speech, not silence


async def test_duration_is_plausible_for_the_text(voice: PiperTts) -> None:
    chunks = await synthesise(voice, TWO_SENTENCES)
    seconds = sum(len(chunk) for chunk in chunks) / voice.sample_rate
    words = len(TWO_SENTENCES.split())
    # Conversational English is 2 to 4 words per second.
    assert words / 4 < seconds < words / 2


async def test_blank_text_yields_nothing(voice: PiperTts) -> None:
    assert await synthesise(voice, "  \n") == []


async def test_oversized_text_is_a_typed_error(voice: PiperTts) -> None:
    with pytest.raises(EngineInputError, match="max_text_chars"):
        await synthesise(voice, "word " * 1000)


async def test_closing_after_the_first_sentence_stops_and_the_voice_stays_usable(voice: PiperTts) -> None:
    stream = voice.stream(TWO_SENTENCES + " " + TWO_SENTENCES)
    first = await anext(stream)
    await stream.aclose()
    assert len(first) > 0
    assert len(await synthesise(voice, "Goodbye.")) == 1


async def test_concurrent_streams_each_get_their_own_audio(voice: PiperTts) -> None:
    short, long = await asyncio.gather(synthesise(voice, "Yes."), synthesise(voice, TWO_SENTENCES))
    assert len(short) == 1 and len(long) == 2
    assert len(short[0]) < len(long[0])

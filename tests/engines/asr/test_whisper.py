"""Whisper recognises real and synthesised speech after a telephone channel, one utterance at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pytest

from engines.base import AsrStream
from engines.errors import EngineInputError
from engines.manifest import Manifest
from tests.engines.installed import Recording, require_model
from tests.engines.speech import Pcm16, read_wav, resample, telephone_channel, word_error_rate

pytest.importorskip("faster_whisper", reason="the `local` extra (faster-whisper) is not installed")
from engines.asr.whisper import WhisperAsr, load

if TYPE_CHECKING:
    from engines.tts.piper import PiperTts

pytestmark = pytest.mark.models

FRAME = 320  # 20 ms at 16 kHz, as the connector feeds it


@pytest.fixture(scope="module")
def asr(manifest: Manifest) -> Iterator[WhisperAsr]:
    require_model(manifest, "whisper-tiny.en")
    engine = load(manifest, {"cpu_threads": 2})
    yield engine
    engine.close()


def feed_in_frames(stream: AsrStream, samples: Pcm16) -> None:
    for start in range(0, len(samples), FRAME):
        stream.feed(samples[start : start + FRAME])


async def test_piper_sentence_survives_the_phone_line(asr: WhisperAsr, voice: PiperTts) -> None:
    sentence = "I would like to check the balance of my savings account, please."
    audio = np.concatenate([chunk async for chunk in voice.stream(sentence)])
    rate = voice.sample_rate
    stream = asr.new_stream()
    feed_in_frames(stream, telephone_channel(resample(audio, rate, 16_000)))
    result = await stream.finalize()
    assert word_error_rate(sentence, result.text) <= 0.1, result.text
    assert result.confidence is not None and result.confidence > 0.5
    assert 0.0 <= result.start_s < result.end_s <= len(audio) / rate + 0.05


@pytest.mark.parametrize("careful", [False, True], ids=["greedy", "careful"])
async def test_real_recordings_over_the_phone_line_have_a_low_word_error_rate(
    asr: WhisperAsr, librivox: list[Recording], careful: bool
) -> None:
    # A careful stream (a date of birth expected) searches a wider beam; it must read ordinary speech as well.
    stream = asr.new_stream(careful=careful)
    errors = words = 0.0
    for recording in librivox[2:4]:
        samples, _ = read_wav(recording.path)
        stream.feed(telephone_channel(samples))
        result = await stream.finalize()
        reference_words = len(recording.transcript.split())
        errors += word_error_rate(recording.transcript, result.text) * reference_words
        words += reference_words
    assert errors / words <= 0.15


async def test_partial_hypothesis_then_final_text_then_a_fresh_utterance(
    asr: WhisperAsr, librivox: list[Recording]
) -> None:
    samples, _ = read_wav(librivox[4].path)  # "he might even have been made amiable himself"
    stream = asr.new_stream()
    assert stream.partial() == ""
    stream.feed(samples[: len(samples) // 2])
    partial = await stream.update_partial()
    assert stream.partial() == partial and "he might" in partial.lower()
    stream.feed(samples[len(samples) // 2 :])
    final = await stream.finalize()
    assert word_error_rate(librivox[4].transcript, final.text) <= 0.15
    assert stream.partial() == ""
    assert (await stream.finalize()).text == ""  # nothing fed since: an empty utterance


async def test_silence_and_noise_give_no_words(asr: WhisperAsr) -> None:
    stream = asr.new_stream()
    stream.feed(np.zeros(2 * 16_000, dtype=np.int16))
    assert (await stream.finalize()).text == ""
    stream.feed((np.random.default_rng(1).standard_normal(2 * 16_000) * 300).astype(np.int16))
    assert (await stream.finalize()).text == ""


async def test_audio_beyond_the_utterance_limit_is_ignored(manifest: Manifest, librivox: list[Recording]) -> None:
    short = load(manifest, {"max_utterance_s": 1.5, "cpu_threads": 2})
    try:
        samples, _ = read_wav(librivox[0].path)  # 7 s
        stream = short.new_stream()
        feed_in_frames(stream, samples)
        result = await stream.finalize()
    finally:
        short.close()
    assert result.end_s <= 1.5
    assert len(result.text.split()) < len(librivox[0].transcript.split()) / 2


def test_wrong_samples_are_typed_errors(asr: WhisperAsr) -> None:
    stream = asr.new_stream()
    with pytest.raises(EngineInputError):
        stream.feed(np.zeros(320, dtype=np.float32))
    with pytest.raises(EngineInputError):
        stream.feed(np.zeros((2, 320), dtype=np.int16))

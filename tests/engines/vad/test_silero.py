"""Silero VAD on real speech, silence and noise, with per-call state kept apart."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from engines.errors import EngineInputError
from engines.manifest import Manifest
from tests.engines.installed import Recording, require_model
from tests.engines.speech import read_wav, telephone_channel

pytest.importorskip("onnxruntime", reason="the `local` extra (onnxruntime) is not installed")
from engines.vad.silero import SileroStream, SileroVad, load

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def vad(manifest: Manifest) -> Iterator[SileroVad]:
    require_model(manifest, "silero-vad")
    engine = load(manifest, {})
    yield engine
    engine.close()


def probabilities(stream: SileroStream, samples: npt.NDArray[np.int16], frame: int = 512) -> npt.NDArray[np.float64]:
    return np.array([stream.probability(samples[i : i + frame]) for i in range(0, len(samples) - frame + 1, frame)])


def test_real_speech_scores_high_even_after_a_telephone_channel(vad: SileroVad, librivox: list[Recording]) -> None:
    for recording in librivox[:2]:
        samples, rate = read_wav(recording.path)
        assert rate == 16_000
        for audio in (samples, telephone_channel(samples)):
            scores = probabilities(vad.new_stream(), audio)
            # Read speech with short pauses: most frames are speech, some are clearly so.
            assert (scores > 0.5).mean() > 0.7, recording.path.name
            assert scores.max() > 0.95


def test_silence_scores_low(vad: SileroVad) -> None:
    assert probabilities(vad.new_stream(), np.zeros(16_000, dtype=np.int16)).max() < 0.1


@pytest.mark.parametrize("level_dbfs", [-50, -30, -20])
def test_white_noise_scores_low(vad: SileroVad, level_dbfs: int) -> None:
    noise = np.random.default_rng(7).standard_normal(3 * 16_000) * 32768 * 10 ** (level_dbfs / 20)
    assert probabilities(vad.new_stream(), noise.astype(np.int16)).max() < 0.3


def test_a_pure_tone_is_not_speech(vad: SileroVad) -> None:
    tone = 8000 * np.sin(2 * np.pi * 1000 * np.arange(3 * 16_000) / 16_000)
    assert probabilities(vad.new_stream(), tone.astype(np.int16)).max() < 0.3


def test_interleaved_streams_keep_their_own_state(vad: SileroVad, librivox: list[Recording]) -> None:
    speech, _ = read_wav(librivox[1].path)
    alone = probabilities(vad.new_stream(), speech[:16_000])
    speaker, silent = vad.new_stream(), vad.new_stream()
    interleaved = []
    for i in range(0, 16_000 - 511, 512):
        interleaved.append(speaker.probability(speech[i : i + 512]))
        silent.probability(np.zeros(512, dtype=np.int16))
    np.testing.assert_allclose(interleaved, alone, atol=1e-6)


def test_reset_forgets_the_past(vad: SileroVad, librivox: list[Recording]) -> None:
    speech, _ = read_wav(librivox[1].path)
    fresh = probabilities(vad.new_stream(), speech[:8192])
    stream = vad.new_stream()
    probabilities(stream, speech[8192:16384])
    stream.reset()
    np.testing.assert_allclose(probabilities(stream, speech[:8192]), fresh, atol=1e-6)


@pytest.mark.parametrize(
    "frame",
    [np.zeros(320, dtype=np.int16), np.zeros(512, dtype=np.float32), np.zeros((2, 512), dtype=np.int16)],
    ids=["20ms-frame", "float32", "stereo"],
)
def test_wrong_frames_are_typed_errors(vad: SileroVad, frame: npt.NDArray[np.int16]) -> None:
    with pytest.raises(EngineInputError):
        vad.new_stream().probability(frame)

"""Tone generation, single-frequency power, and in-band DTMF reference signals."""

from __future__ import annotations

import numpy as np
import pytest

from avc.media.dtmf import DIGITS
from avc.media.g711 import PCMA, PCMU, G711Codec
from avc.media.resample import Resampler
from avc.media.tone import (
    DTMF_FREQUENCIES,
    DTMF_HIGH_HZ,
    DTMF_LOW_HZ,
    ToneGenerator,
    dominant_tone,
    dtmf_tone,
    goertzel_power,
)


def test_frames_of_any_size_join_into_the_same_continuous_tone() -> None:
    whole = ToneGenerator([1004.0], 8000).next(1160)
    framed = ToneGenerator([1004.0], 8000)
    parts = np.concatenate([framed.next(n) for n in (160, 0, 1, 999)])
    assert np.array_equal(parts, whole)


def test_phase_stays_exact_after_a_minute_of_20ms_frames() -> None:
    generator = ToneGenerator([1004.0], 16000, 0.5)
    frames = 60 * 50
    for _ in range(frames - 1):
        generator.next(320)
    last = generator.next(320).astype(np.float64)
    # 1004 Hz repeats every 4000 samples at 16 kHz: reducing the index keeps the reference exact.
    n = np.arange((frames - 1) * 320, frames * 320) % 4000
    expected = 0.5 * 32767 * np.sin(2 * np.pi * 1004.0 * n / 16000)
    assert np.max(np.abs(last - expected)) <= 1.0


def test_a_tone_has_the_requested_peak_and_power() -> None:
    tone = ToneGenerator([1000.0], 8000, 0.25).next(8000)
    assert int(np.max(np.abs(tone))) == round(0.25 * 32767)
    assert goertzel_power(tone, 1000.0, 8000) == pytest.approx(0.0625, rel=1e-3)


@pytest.mark.parametrize("length", [160, 201, 320, 8000])
def test_a_full_scale_sine_measures_about_one_whatever_the_length(length: int) -> None:
    tone = ToneGenerator([1000.0], 8000, 1.0).next(length)
    assert goertzel_power(tone, 1000.0, 8000) == pytest.approx(1.0, abs=0.03)


def test_power_away_from_the_tone_is_small() -> None:
    tone = ToneGenerator([1000.0], 8000, 1.0).next(1600)
    assert goertzel_power(tone, 2000.0, 8000) < 1e-6
    assert goertzel_power(np.zeros(160, dtype=np.int16), 1000.0, 8000) == 0.0
    assert goertzel_power(np.zeros(0, dtype=np.int16), 1000.0, 8000) == 0.0


def test_several_frequencies_add_up_without_clipping() -> None:
    pair = ToneGenerator([697.0, 1209.0], 8000, 0.5).next(4000)
    assert goertzel_power(pair, 697.0, 8000) == pytest.approx(0.25, rel=0.01)
    assert goertzel_power(pair, 1209.0, 8000) == pytest.approx(0.25, rel=0.01)
    assert int(np.max(np.abs(pair))) <= 32767


@pytest.mark.parametrize(
    ("frequencies", "rate", "amplitude"),
    [
        ([], 8000, 0.25),
        ([4000.0], 8000, 0.25),
        ([0.0], 8000, 0.25),
        ([1000.0], 0, 0.25),
        ([1000.0, 2000.0], 8000, 0.6),
        ([1000.0], 8000, 0.0),
    ],
)
def test_impossible_tones_are_rejected(frequencies: list[float], rate: int, amplitude: float) -> None:
    with pytest.raises(ValueError):
        ToneGenerator(frequencies, rate, amplitude)


def test_negative_sample_counts_and_bad_measurements_are_rejected() -> None:
    with pytest.raises(ValueError):
        ToneGenerator([1000.0], 8000).next(-1)
    with pytest.raises(ValueError):
        goertzel_power(np.zeros(160, dtype=np.int16), 5000.0, 8000)
    with pytest.raises(ValueError, match="1-D"):
        goertzel_power(np.zeros((2, 160), dtype=np.int16), 1000.0, 8000)


def test_the_dominant_tone_is_the_candidate_that_carries_the_signal() -> None:
    tone = ToneGenerator([1004.0], 8000, 0.1).next(800)
    assert dominant_tone(tone, [440.0, 1004.0, 2000.0], 8000) == 1004.0


def test_silence_noise_and_weak_tones_have_no_dominant_tone() -> None:
    candidates = [440.0, 1004.0, 2000.0]
    assert dominant_tone(np.zeros(800, dtype=np.int16), candidates, 8000) is None
    noise = np.random.default_rng(5).normal(0, 3000, 800).astype(np.int16)
    assert dominant_tone(noise, candidates, 8000) is None
    faint = ToneGenerator([1004.0], 8000, 0.005).next(800)  # -46 dBFS
    assert dominant_tone(faint, candidates, 8000) is None
    assert dominant_tone(np.zeros(0, dtype=np.int16), candidates, 8000) is None
    assert dominant_tone(faint, [], 8000) is None


def test_a_tone_that_is_only_part_of_a_louder_signal_is_not_dominant() -> None:
    quiet = ToneGenerator([1004.0], 8000, 0.05).next(800)
    loud = ToneGenerator([1500.0, 2500.0], 8000, 0.3).next(800)
    mixture = quiet + loud
    assert goertzel_power(mixture, 1004.0, 8000) > 1e-3  # well above the noise floor on its own
    assert dominant_tone(mixture, [1004.0], 8000) is None
    assert dominant_tone(mixture, [1004.0, 1500.0], 8000) == 1500.0


@pytest.mark.parametrize("digit", list(DIGITS))
def test_each_dtmf_digit_is_its_keypad_row_and_column_pair(digit: str) -> None:
    tone = dtmf_tone(digit, 8000, 60)
    assert tone.size == 480 and tone.dtype == np.int16
    low, high = DTMF_FREQUENCIES[digit]
    assert dominant_tone(tone, DTMF_LOW_HZ, 8000) == low
    assert dominant_tone(tone, DTMF_HIGH_HZ, 8000) == high


def test_keypad_layout_matches_q23() -> None:
    assert DTMF_FREQUENCIES["1"] == (697.0, 1209.0)
    assert DTMF_FREQUENCIES["0"] == (941.0, 1336.0)
    assert DTMF_FREQUENCIES["#"] == (941.0, 1477.0)
    assert DTMF_FREQUENCIES["D"] == (941.0, 1633.0)
    assert set(DTMF_FREQUENCIES) == set(DIGITS)


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_in_band_dtmf_survives_g711_and_upsampling_to_16k(codec: G711Codec) -> None:
    line = codec.decode(codec.encode(dtmf_tone("8", 8000, 100)))
    wideband = Resampler(8000, 16000).process(line)
    assert dominant_tone(wideband, DTMF_LOW_HZ, 16000) == 852.0
    assert dominant_tone(wideband, DTMF_HIGH_HZ, 16000) == 1336.0


def test_dtmf_tone_rejects_non_digits_and_negative_durations() -> None:
    for digit in ("E", "", "12"):
        with pytest.raises(ValueError):
            dtmf_tone(digit, 8000, 100)
    with pytest.raises(ValueError):
        dtmf_tone("1", 8000, -5)

"""Streaming resampler: frequency response, alias and image rejection, frame continuity, delay."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from avc.media.g711 import PCMU
from avc.media.resample import _HALFBAND, Resampler, _Polyphase
from avc.media.tone import ToneGenerator, goertzel_power

# Every conversion the connector makes: G.711 <-> engines, and TTS voices down to the line.
PAIRS = [(8000, 16000), (16000, 8000), (22050, 8000), (22050, 16000), (24000, 8000), (8000, 22050)]
AMPLITUDE = 0.3


def tone(frequency: float, rate: int, seconds: float = 0.5) -> npt.NDArray[np.int16]:
    return ToneGenerator([frequency], rate, AMPLITUDE).next(int(rate * seconds))


def settled(pcm: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.int16]:
    """Drop the first 50 ms: the filter filling from silence is not the steady state."""
    return pcm[rate // 20 :]


def gain_db(frequency: float, in_rate: int, out_rate: int, measured_at: float | None = None) -> float:
    out = settled(Resampler(in_rate, out_rate).process(tone(frequency, in_rate)), out_rate)
    power = goertzel_power(out, measured_at if measured_at is not None else frequency, out_rate)
    return 10 * math.log10(max(power, 1e-20) / AMPLITUDE**2)


def total_db(pcm: npt.NDArray[np.int16]) -> float:
    """Level of everything in `pcm` relative to the test tone, wherever it landed in frequency."""
    mean_square = float(np.mean(pcm.astype(np.float64) ** 2)) / 32767.0**2
    return 10 * math.log10(max(2 * mean_square, 1e-20) / AMPLITUDE**2)


def test_a_1khz_tone_passes_8k_to_16k_at_its_amplitude() -> None:
    out = settled(Resampler(8000, 16000).process(tone(1000, 8000)), 16000)
    assert abs(np.max(np.abs(out)) / 32767 - AMPLITUDE) < 0.003
    assert abs(gain_db(1000, 8000, 16000)) < 0.05


def test_a_6khz_tone_at_16k_is_not_aliased_to_2khz_when_downsampled_to_8k() -> None:
    # Naive decimation would fold 6 kHz onto 2 kHz at full level.
    assert gain_db(6000, 16000, 8000, measured_at=2000) < -60
    out = settled(Resampler(16000, 8000).process(tone(6000, 16000)), 8000)
    assert total_db(out) < -60


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (16000, 8000)])
@pytest.mark.parametrize("frequency", [300, 1000, 2000, 3000, 3400])
def test_the_telephone_band_is_flat_within_half_a_db(in_rate: int, out_rate: int, frequency: int) -> None:
    assert abs(gain_db(frequency, in_rate, out_rate)) < 0.5


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_passband_up_to_85_percent_of_the_lower_nyquist_is_flat(in_rate: int, out_rate: int) -> None:
    edge = 0.425 * min(in_rate, out_rate)
    for frequency in (300.0, edge / 2, edge):
        assert abs(gain_db(frequency, in_rate, out_rate)) < 0.1


@pytest.mark.parametrize(("in_rate", "out_rate"), [p for p in PAIRS if p[0] > p[1]])
def test_downsampling_rejects_every_stopband_tone_by_60db(in_rate: int, out_rate: int) -> None:
    low = min(in_rate, out_rate)
    for frequency in np.linspace(0.575 * low, 0.49 * in_rate, 5):
        out = settled(Resampler(in_rate, out_rate).process(tone(float(frequency), in_rate)), out_rate)
        assert total_db(out) < -60, f"{frequency:.0f} Hz leaks through"


@pytest.mark.parametrize(("in_rate", "out_rate"), [p for p in PAIRS if p[0] < p[1]])
def test_upsampling_suppresses_spectral_images_by_60db(in_rate: int, out_rate: int) -> None:
    for frequency in (300.0, 1000.0, 0.425 * in_rate):
        # Zero stuffing mirrors the band around every multiple of the input rate.
        images = [k * in_rate + s * frequency for k in range(1, out_rate // in_rate + 1) for s in (-1, 1)]
        for image in (f for f in images if f < out_rate / 2):
            assert gain_db(frequency, in_rate, out_rate, measured_at=image) < -60


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_resampling_in_20ms_frames_equals_resampling_in_one_go(in_rate: int, out_rate: int) -> None:
    signal = ToneGenerator([440, 1500], in_rate, 0.2).next(in_rate // 2)
    whole = Resampler(in_rate, out_rate).process(signal)
    framed = Resampler(in_rate, out_rate)
    frame = in_rate // 50
    parts = np.concatenate([framed.process(signal[i : i + frame]) for i in range(0, signal.size, frame)])
    assert np.array_equal(parts, whole)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_frames_of_arbitrary_and_odd_sizes_give_the_same_stream(in_rate: int, out_rate: int) -> None:
    signal = ToneGenerator([700], in_rate, 0.4).next(in_rate // 4)
    whole = Resampler(in_rate, out_rate).process(signal)
    cuts = np.sort(np.random.default_rng(7).integers(0, signal.size, 30))
    pieces = Resampler(in_rate, out_rate)
    parts = np.concatenate([pieces.process(chunk) for chunk in np.split(signal, cuts)])
    assert np.array_equal(parts, whole)


def test_a_long_utterance_is_filtered_in_blocks_without_changing_the_result() -> None:
    speechlike = ToneGenerator([210, 1250, 2900], 22050, 0.2).next(22050 * 2)
    whole = Resampler(22050, 8000).process(speechlike)
    framed = Resampler(22050, 8000)
    parts = np.concatenate([framed.process(speechlike[i : i + 441]) for i in range(0, speechlike.size, 441)])
    assert np.array_equal(parts, whole)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_output_length_accumulates_to_exactly_in_len_times_out_over_in(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    produced = consumed = 0
    for size in [1, 0, 7, in_rate // 50, 3, 999, in_rate // 50, 2]:
        produced += resampler.process(np.zeros(size, dtype=np.int16)).size
        consumed += size
        assert produced == -(-consumed * out_rate // in_rate)  # ceiling: nothing is held back


def test_20ms_frames_map_to_20ms_frames_for_every_connector_rate() -> None:
    for in_rate, out_rate in PAIRS:
        resampler = Resampler(in_rate, out_rate)
        sizes = {resampler.process(np.zeros(in_rate // 50, dtype=np.int16)).size for _ in range(10)}
        assert sizes == {out_rate // 50}


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_output_lags_the_input_by_the_documented_group_delay(in_rate: int, out_rate: int) -> None:
    frequency = 500.0
    resampler = Resampler(in_rate, out_rate)
    out = resampler.process(tone(frequency, in_rate)).astype(np.float64)
    t = np.arange(out.size) / out_rate - resampler.delay_s
    expected = AMPLITUDE * 32767 * np.sin(2 * np.pi * frequency * t)
    steady = slice(out_rate // 20, None)
    # A delay off by one output sample would leave an error of ~20 % of the amplitude at 500 Hz.
    assert np.max(np.abs(out[steady] - expected[steady])) < 0.005 * AMPLITUDE * 32767


def test_group_delay_is_under_2ms_on_the_per_packet_paths() -> None:
    assert Resampler(8000, 16000).delay_s == pytest.approx(29 / 16000)
    assert Resampler(16000, 8000).delay_s == pytest.approx(29 / 16000)
    assert Resampler(16000, 16000).delay_s == 0.0


def test_the_fast_2x_paths_compute_the_general_polyphase_filter() -> None:
    rng = np.random.default_rng(3)
    narrowband = rng.integers(-20000, 20000, 1601).astype(np.int16)
    general_up = _Polyphase(2, 1, np.append(2 * _HALFBAND, 0.0))
    expected_up = np.clip(np.rint(general_up.process(narrowband)), -32768, 32767).astype(np.int16)
    assert np.array_equal(Resampler(8000, 16000).process(narrowband), expected_up)

    wideband = rng.integers(-20000, 20000, 3201).astype(np.int16)
    general_down = _Polyphase(1, 2, _HALFBAND.copy())
    expected_down = np.clip(np.rint(general_down.process(wideband)), -32768, 32767).astype(np.int16)
    assert np.array_equal(Resampler(16000, 8000).process(wideband), expected_down)


def test_reset_forgets_the_previous_stream() -> None:
    resampler = Resampler(8000, 16000)
    resampler.process(tone(1000, 8000, 0.1))
    resampler.reset()
    fresh = Resampler(8000, 16000)
    probe = tone(300, 8000, 0.1)
    assert np.array_equal(resampler.process(probe), fresh.process(probe))


def test_equal_rates_return_a_copy_of_the_input() -> None:
    pcm = tone(1000, 16000, 0.02)
    out = Resampler(16000, 16000).process(pcm)
    assert np.array_equal(out, pcm)
    assert out is not pcm and not np.shares_memory(out, pcm)


def test_overshoot_of_a_full_scale_square_wave_saturates_instead_of_wrapping() -> None:
    square = np.where(np.sin(2 * np.pi * 250 * np.arange(800) / 8000) >= 0, 32767, -32768).astype(np.int16)
    out = settled(Resampler(8000, 16000).process(square), 16000)
    assert out.max() == 32767 and out.min() == -32768
    # The filter rings a few percent past full scale at each edge; wrapping would flip those to the
    # opposite sign and no sample would sit near the extremes with the wrong sign.
    expected = np.sin(2 * np.pi * 250 * (np.arange(out.size) + 800 - 29) / 16000)
    plateaus = np.abs(expected) > 0.5
    assert np.all(np.sign(out[plateaus]) == np.sign(expected[plateaus]))


def test_decoded_g711_frames_upsample_to_320_samples_per_20ms() -> None:
    frames = [PCMU.encode(chunk) for chunk in np.split(tone(1004, 8000, 0.2), 10)]
    upsampler = Resampler(8000, 16000)
    out = np.concatenate([upsampler.process(PCMU.decode(frame)) for frame in frames])
    assert out.size == 10 * 320
    assert goertzel_power(settled(out, 16000), 1004, 16000) == pytest.approx(AMPLITUDE**2, rel=0.02)


def test_bad_input_raises_typed_errors() -> None:
    resampler = Resampler(8000, 16000)
    with pytest.raises(TypeError, match="int16"):
        resampler.process(np.zeros(160, dtype=np.float32))
    with pytest.raises(TypeError, match="int16"):
        resampler.process([0] * 160)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D"):
        resampler.process(np.zeros((2, 160), dtype=np.int16))
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 8000)
    with pytest.raises(ValueError, match="too large"):
        Resampler(8000, 8017)


def test_factors_are_reduced_to_lowest_terms() -> None:
    tts = Resampler(22050, 8000)
    assert (tts.up, tts.down) == (160, 441)
    assert (Resampler(24000, 8000).up, Resampler(24000, 8000).down) == (1, 3)

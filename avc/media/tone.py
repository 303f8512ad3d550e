"""Test tones: a phase-continuous sine generator, single-frequency power measurement, in-band DTMF.

Used by the `tone` diagnostic call mode and by tests; real DTMF arrives out of band (RFC 4733 or SIP
INFO, see `avc.media.dtmf`), so in-band DTMF here only generates reference signals and checks them.

Levels are relative to int16 full scale (32767): a sine of amplitude `a` (0..1) measures `a ** 2`
with `goertzel_power`, so a full-scale sine measures about 1.0 (0 dBFS) whatever the length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

__all__ = ["DTMF_FREQUENCIES", "ToneGenerator", "dominant_tone", "dtmf_tone", "goertzel_power"]

FULL_SCALE = 32767.0

DTMF_LOW_HZ = (697.0, 770.0, 852.0, 941.0)
"""Row frequencies of the DTMF keypad (ITU-T Q.23)."""
DTMF_HIGH_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
"""Column frequencies of the DTMF keypad (ITU-T Q.23)."""
_KEYPAD = ("123A", "456B", "789C", "*0#D")
DTMF_FREQUENCIES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        digit: (DTMF_LOW_HZ[row], DTMF_HIGH_HZ[column])
        for row, keys in enumerate(_KEYPAD)
        for column, digit in enumerate(keys)
    }
)
"""(row, column) frequencies of each DTMF digit."""
DTMF_AMPLITUDE = 0.25
"""Amplitude of each of the two DTMF tones: peaks at half of full scale, -9 dBFS each."""

MIN_TONE_POWER = 1e-4
"""`dominant_tone` ignores candidates weaker than this (-40 dBFS): that is noise, not a tone."""
MIN_TONE_SHARE = 0.25
"""...and candidates carrying less than this share of the signal's power: speech and noise spread
their power wide, while a tone (or each of the two in a DTMF pair) holds at least half of it."""


class ToneGenerator:
    """Sum of sines of `amplitude` each (fraction of full scale), continuous in phase across `next()`."""

    def __init__(self, frequencies: Sequence[float], rate: int, amplitude: float = 0.25) -> None:
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        if not frequencies:
            raise ValueError("a tone needs at least one frequency")
        for frequency in frequencies:
            if not 0 < frequency < rate / 2:
                raise ValueError(f"tone frequency {frequency} Hz is outside 0..{rate / 2} Hz at {rate} Hz")
        if not 0 < amplitude * len(frequencies) <= 1.0:
            raise ValueError(f"{len(frequencies)} tones of amplitude {amplitude} do not fit in full scale")
        self.frequencies = tuple(float(f) for f in frequencies)
        self.rate = rate
        self.amplitude = amplitude
        self._steps = 2 * np.pi * np.array(self.frequencies) / rate
        self._phases = np.zeros(len(self.frequencies))

    def next(self, samples: int) -> npt.NDArray[np.int16]:
        """The next `samples` samples of the tone."""
        if samples < 0:
            raise ValueError(f"sample count must not be negative, got {samples}")
        phases = self._phases[:, np.newaxis] + self._steps[:, np.newaxis] * np.arange(samples)
        wave = np.sin(phases).sum(axis=0) * (self.amplitude * FULL_SCALE)
        # Wrapped to one period: the phase stays exact however long the tone runs.
        self._phases = (self._phases + self._steps * samples) % (2 * np.pi)
        tone: npt.NDArray[np.int16] = np.rint(wave).astype(np.int16)
        return tone


def _as_signal(samples: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    signal = np.asarray(samples, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"expected one channel (a 1-D array), got shape {signal.shape}")
    return signal


def _powers(signal: npt.NDArray[np.float64], frequencies: Sequence[float], rate: int) -> npt.NDArray[np.float64]:
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    for frequency in frequencies:
        if not 0 < frequency < rate / 2:
            raise ValueError(f"frequency {frequency} Hz is outside 0..{rate / 2} Hz at {rate} Hz")
    if signal.size == 0:
        return np.zeros(len(frequencies))
    # Goertzel's recursion computes one DFT term per frequency; one complex dot product per frequency
    # gives the same term without a Python loop over samples.
    omega = 2 * np.pi * np.asarray(frequencies, dtype=np.float64) / rate
    terms = np.exp(-1j * np.outer(omega, np.arange(signal.size))) @ signal
    amplitudes = 2 * np.abs(terms) / (signal.size * FULL_SCALE)
    result: npt.NDArray[np.float64] = amplitudes**2
    return result


def goertzel_power(samples: npt.NDArray[np.generic], frequency: float, rate: int) -> float:
    """Power of `samples` (int16 PCM units) at `frequency`: ~1.0 for a full-scale sine there, 0 if empty."""
    return float(_powers(_as_signal(samples), [frequency], rate)[0])


def dominant_tone(samples: npt.NDArray[np.generic], candidates: Sequence[float], rate: int) -> float | None:
    """The candidate frequency that clearly carries the signal, or None.

    The strongest candidate wins if it is above `MIN_TONE_POWER` and holds at least `MIN_TONE_SHARE`
    of the signal's power.
    """
    signal = _as_signal(samples)
    if not candidates or signal.size == 0:
        return None
    powers = _powers(signal, candidates, rate)
    best = int(np.argmax(powers))
    # A sine of amplitude a has mean square a**2 / 2: scaled this way it compares with `powers`.
    total = 2 * float(np.dot(signal, signal)) / (signal.size * FULL_SCALE**2)
    if powers[best] < MIN_TONE_POWER or powers[best] < MIN_TONE_SHARE * total:
        return None
    return float(candidates[best])


def dtmf_tone(digit: str, rate: int, duration_ms: int) -> npt.NDArray[np.int16]:
    """In-band DTMF: the digit's two tones, `DTMF_AMPLITUDE` each, for `duration_ms`."""
    frequencies = DTMF_FREQUENCIES.get(digit) if len(digit) == 1 else None
    if frequencies is None:
        raise ValueError("not a DTMF digit; expected one of " + "".join(DTMF_FREQUENCIES))
    if duration_ms < 0:
        raise ValueError(f"duration must not be negative, got {duration_ms}")
    return ToneGenerator(frequencies, rate, DTMF_AMPLITUDE).next(rate * duration_ms // 1000)

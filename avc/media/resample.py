"""Streaming sample-rate conversion of int16 PCM with a windowed-sinc (Kaiser) polyphase FIR.

The connector resamples every 20 ms frame of every call: 8 kHz G.711 up to the 16 kHz the speech
engines want, and 16, 22.05 or 24 kHz synthesis down to 8 kHz. A `Resampler` keeps the filter's
input history and its position between frames, so a stream cut into frames gives exactly the output
of the whole stream at once: no clicks at frame boundaries.

Conversion by a rational factor L/M is the textbook polyphase structure: upsample by L (zero
stuffing), low-pass, keep every M-th sample, computing only the samples that are kept. The low-pass
is centred on the Nyquist frequency of the lower rate, with a transition band of 15 % of that rate on
either side of it. For 8 kHz that is a passband to 3.4 kHz and a stopband from 4.6 kHz: the edges of
the ITU-T G.712 PCM channel mask. Everything the telephone band carries passes flat (within 0.01 dB);
images and aliases are at least 60 dB down (the Kaiser window is designed for 70 dB, the margin
covers the length estimate being approximate). Only signal between 4.0 and 4.6 kHz can alias, and it
lands between 3.4 and 4.0 kHz, outside the telephone band.

The two conversions that run per packet per call, 2x up and 2x down, use a half-band filter: the
cut-off sits exactly at a quarter of the high rate, so every second coefficient is zero and the centre
one is 0.5. Upsampling then copies the input to every other output sample and filters only the other
half; downsampling filters only one input phase and adds half of the other. That is half the work
of the general path, and the output is the same.

Group delay (linear phase, the same at all frequencies; `Resampler.delay_s`): with the half-band
filter 2 * 15 - 1 = 29 samples at the high rate, 1.8125 ms between 8 and 16 kHz. With the general
filter of N taps at the upsampled rate in_rate * L it is (N - 1) / 2 of those samples: 1.81 ms for
22.05 -> 8 kHz and 24 -> 8 kHz, 0.91 ms for 22.05 -> 16 kHz (the filter length, and so the delay,
scales with the lower rate's period). The first `delay_s` of output after construction or `reset()`
is the filter filling up from silence.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["Resampler"]

Samples = npt.NDArray[np.float64]

STOPBAND_DB = 70.0
"""Kaiser design attenuation; measured stopband is >= 60 dB for every supported rate pair."""
TRANSITION = 0.15
"""Transition band width as a fraction of the lower rate, centred on its Nyquist frequency."""
HALFBAND_HALF_TAPS = 15
"""The half-band filter has 4 * 15 - 1 = 59 taps: 30 non-zero besides the centre."""
MAX_FACTOR = 1024
"""Largest L or M accepted: beyond it the prototype filter would be large for no real rate pair."""
# Inputs longer than this are filtered in blocks, so a long TTS utterance does not build one huge
# matrix of filter windows.
_BLOCK = 4096


def _kaiser_beta(attenuation_db: float) -> float:
    # Kaiser's empirical formula for stopband attenuation above 50 dB.
    return 0.1102 * (attenuation_db - 8.7)


def _kaiser_length(attenuation_db: float, transition: float) -> int:
    """Taps needed for `attenuation_db` with a transition band of `transition` cycles per sample."""
    return math.ceil((attenuation_db - 7.95) / (2.285 * 2 * math.pi * transition)) + 1


def _design_halfband(half_taps: int) -> Samples:
    """Half-band low-pass with unity DC gain, cut-off at a quarter of its sample rate."""
    taps = 4 * half_taps - 1
    offsets = np.arange(taps) - (2 * half_taps - 1)
    odd = offsets % 2 == 1
    h = np.zeros(taps)
    h[odd] = 0.5 * np.sinc(0.5 * offsets[odd]) * np.kaiser(taps, _kaiser_beta(STOPBAND_DB))[odd]
    # Exact structural values instead of sinc's rounding: zero even taps, 0.5 centre, and odd taps
    # summing to 0.5 so each polyphase branch has exactly half the DC gain.
    h[odd] *= 0.5 / h[odd].sum()
    h[2 * half_taps - 1] = 0.5
    h.flags.writeable = False
    return h


def _design_lowpass(up: int, in_rate: int, out_rate: int) -> Samples:
    """Prototype for L/M conversion at rate in_rate * L, gain L, length a multiple of L."""
    high_rate = in_rate * up
    low_rate = min(in_rate, out_rate)
    cutoff = 0.5 * low_rate / high_rate
    taps = math.ceil(_kaiser_length(STOPBAND_DB, TRANSITION * low_rate / high_rate) / up) * up
    t = np.arange(taps) - (taps - 1) / 2
    h: Samples = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(taps, _kaiser_beta(STOPBAND_DB))
    h *= up / h.sum()
    return h


_HALFBAND = _design_halfband(HALFBAND_HALF_TAPS)


def _to_int16(y: Samples) -> npt.NDArray[np.int16]:
    np.rint(y, out=y)
    # Two ufuncs instead of np.clip: the same result at half the per-call overhead on 20 ms frames.
    np.minimum(y, 32767, out=y)
    np.maximum(y, -32768, out=y)
    return y.astype(np.int16)


class _Polyphase:
    """Rational L/M polyphase FIR over a continuous stream.

    Output n is the filtered upsampled stream at time n * M (in upsampled samples): input sample
    floor(n * M / L) is its newest contributor and n * M mod L selects the filter phase. After T
    input samples exactly ceil(T * L / M) outputs have been produced.
    """

    def __init__(self, up: int, down: int, prototype: Samples, centre: float | None = None) -> None:
        if prototype.size % up:
            raise ValueError("prototype length must be a multiple of the upsampling factor")
        self.up = up
        self.down = down
        # Index of the prototype's centre of symmetry: the group delay in upsampled samples.
        self.centre = (prototype.size - 1) / 2 if centre is None else centre
        self._per_phase = prototype.size // up
        # bank[p, j] = h[p + (K - 1 - j) * L]: phase p's taps, oldest input first, to dot with a window.
        bank = prototype.reshape(self._per_phase, up).T[:, ::-1].copy()
        bank.flags.writeable = False
        self._bank = bank
        self._history = np.zeros(self._per_phase - 1)
        # Upsampled-domain time of the next output, relative to the first sample of the next input.
        self._next = 0

    def reset(self) -> None:
        self._history = np.zeros(self._per_phase - 1)
        self._next = 0

    def process(self, x: npt.NDArray[np.int16]) -> Samples:
        if x.size <= _BLOCK:
            return self._block(x)
        return np.concatenate([self._block(x[i : i + _BLOCK]) for i in range(0, x.size, _BLOCK)])

    def _block(self, x: npt.NDArray[np.int16]) -> Samples:
        buf = np.concatenate((self._history, x), dtype=np.float64)
        start, end = self._next, x.size * self.up
        count = max(0, -(-(end - start) // self.down))
        y = self._compute(buf, start, count) if count else np.zeros(0)
        self._next = start + count * self.down - end
        if self._history.size:
            self._history = buf[buf.size - self._history.size :]
        return y

    def _compute(self, buf: Samples, start: int, count: int) -> Samples:
        times = np.arange(start, start + count * self.down, self.down)
        newest = times // self.up
        windows = sliding_window_view(buf, self._per_phase)[newest]
        y: Samples = np.einsum("ij,ij->i", self._bank[times % self.up], windows)
        return y


class _HalfbandUp2(_Polyphase):
    """2x interpolation with the half-band filter (gain 2).

    Phase 1 of the filter holds only the centre tap (1.0): odd outputs are the input delayed by
    H - 1 samples. Phase 0 holds the 2H taps at odd distances from the centre, all non-zero: even
    outputs are one short convolution.
    """

    def __init__(self) -> None:
        # Padded by one zero tap to a length divisible by 2; the centre stays where it was.
        super().__init__(2, 1, np.append(2 * _HALFBAND, 0.0), centre=2 * HALFBAND_HALF_TAPS - 1)
        self._even_taps = 2 * _HALFBAND[0::2]
        # Input i - (H - 1) sits at i + H in `buf`, behind the 2H - 1 samples of history.
        self._lag = HALFBAND_HALF_TAPS

    def _compute(self, buf: Samples, start: int, count: int) -> Samples:
        # With M = 1 every input sample yields exactly two outputs and `start` is always 0.
        inputs = count // 2
        y = np.empty(count)
        y[0::2] = np.convolve(buf, self._even_taps, "valid")
        y[1::2] = buf[self._lag : self._lag + inputs]
        return y


class _HalfbandDown2(_Polyphase):
    """2x decimation with the half-band filter (gain 1).

    Output n needs inputs 2n - 4H + 2 .. 2n: those of the same parity as 2n meet the 2H non-zero
    taps, and of the other parity only the centre one (0.5) at 2n - 2H + 1.
    """

    def __init__(self) -> None:
        super().__init__(1, 2, _HALFBAND.copy())
        self._even_taps = _HALFBAND[0::2].copy()
        self._centre_tap = 2 * HALFBAND_HALF_TAPS - 1

    def _compute(self, buf: Samples, start: int, count: int) -> Samples:
        # `start` (0 or 1) is where the next output's newest input lies; in `buf` it is shifted by the
        # history of 4H - 2 samples, an even number, so `start` also selects the parity in `buf`.
        y = np.convolve(buf[start::2], self._even_taps, "valid")[:count]
        y += 0.5 * buf[start + self._centre_tap :: 2][:count]
        return y


class Resampler:
    """Streaming int16 resampler from `in_rate` to `out_rate` Hz; one per direction per call.

    Feed frames of any length to `process()`; over time the output length is exactly
    in_len * out_rate / in_rate (rounded up at each point). `reset()` forgets the history, for a new
    stream or after a discontinuity (a new SSRC, barge-in).
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        common = math.gcd(in_rate, out_rate)
        up, down = out_rate // common, in_rate // common
        if max(up, down) > MAX_FACTOR:
            raise ValueError(f"unsupported rate pair {in_rate} -> {out_rate}: factor {up}/{down} is too large")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._filter: _Polyphase
        if up == down:
            self._filter = _Polyphase(1, 1, np.ones(1))  # never run: `process` copies; kept for up/down/delay
        elif (up, down) == (2, 1):
            self._filter = _HalfbandUp2()
        elif (up, down) == (1, 2):
            self._filter = _HalfbandDown2()
        else:
            self._filter = _Polyphase(up, down, _design_lowpass(up, in_rate, out_rate))

    @property
    def up(self) -> int:
        """L, the interpolation factor."""
        return self._filter.up

    @property
    def down(self) -> int:
        """M, the decimation factor."""
        return self._filter.down

    @property
    def delay_s(self) -> float:
        """Group delay of the filter in seconds: how far the output lags the input."""
        return self._filter.centre / (self.in_rate * self.up)

    def reset(self) -> None:
        self._filter.reset()

    def process(self, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Resample the next frame of a stream: 1-D int16 in, new 1-D int16 array out."""
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16:
            got = pcm.dtype if isinstance(pcm, np.ndarray) else type(pcm).__name__
            raise TypeError(f"Resampler takes int16 PCM in a numpy array, got {got}")
        if pcm.ndim != 1:
            raise ValueError(f"Resampler takes one channel (a 1-D array), got shape {pcm.shape}")
        if self.up == self.down:
            return pcm.copy()
        return _to_int16(self._filter.process(pcm))

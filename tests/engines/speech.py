"""Audio helpers for the engine tests: WAV reading, resampling, a telephone channel, word error.

Written here, without scipy, so the tests can push real speech through what a phone call does
to it: band-limiting to 8 kHz and G.711-like mu-law companding.
"""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

Pcm16 = npt.NDArray[np.int16]


def read_wav(path: Path) -> tuple[Pcm16, int]:
    """Mono 16-bit PCM samples and their rate."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2, f"{path} is not mono 16-bit"
        samples: Pcm16 = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
        return samples, wav.getframerate()


def resample(samples: Pcm16, src_rate: int, dst_rate: int, half_taps: int = 32) -> Pcm16:
    """Band-limited resampling by Hann-windowed sinc interpolation at each output instant."""
    if src_rate == dst_rate:
        return samples.copy()
    ratio = dst_rate / src_rate
    # Below the lower Nyquist frequency, with a margin for the window's transition band.
    cutoff = min(1.0, ratio) * 0.92
    source = samples.astype(np.float64)
    n_out = int(len(source) * ratio)
    offsets = np.arange(-half_taps + 1, half_taps + 1)
    out = np.empty(n_out, dtype=np.float64)
    block = 8192
    for start in range(0, n_out, block):
        instants = np.arange(start, min(start + block, n_out)) / ratio
        index = np.floor(instants).astype(np.int64)[:, None] + offsets[None, :]
        distance = instants[:, None] - index
        kernel = cutoff * np.sinc(cutoff * distance) * (0.5 + 0.5 * np.cos(np.pi * distance / half_taps))
        valid = (index >= 0) & (index < len(source))
        taps = np.where(valid, source[np.clip(index, 0, len(source) - 1)], 0.0)
        out[start : start + len(instants)] = (taps * kernel).sum(axis=1)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def mu_law_round_trip(samples: Pcm16, mu: float = 255.0) -> Pcm16:
    """Companding with 8-bit codes, the continuous form of what G.711 PCMU does to a sample."""
    x: npt.NDArray[np.float64] = samples.astype(np.float64) / 32768.0
    code = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) * 127.0)
    y: npt.NDArray[np.float64] = np.sign(code) * np.expm1(np.abs(code) / 127.0 * np.log1p(mu)) / mu
    return np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)


def telephone_channel(samples16k: Pcm16) -> Pcm16:
    """16 kHz -> 8 kHz mu-law -> 16 kHz: the audio the connector hands to ASR during a call."""
    return resample(mu_law_round_trip(resample(samples16k, 16_000, 8_000)), 8_000, 16_000)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words, divided by the reference length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        previous, row[0] = row[0], i
        for j, hyp_word in enumerate(hyp, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref_word != hyp_word))
    return row[len(hyp)] / max(1, len(ref))


def rms_dbfs(samples: Pcm16) -> float:
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return 20.0 * float(np.log10(max(rms, 1e-9) / 32768.0))

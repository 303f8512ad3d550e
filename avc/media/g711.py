"""ITU-T G.711 mu-law (PCMU) and A-law (PCMA), vectorised with lookup tables.

Every call decodes and encodes 50 frames a second, so the companding rules run once per process, at
import, to fill read-only tables: 256 entries to decode, 65,536 to encode, indexed by the unsigned bit
pattern of the int16 sample. A frame is then one numpy gather, with no Python work per sample.

The tables follow the ITU-T G.191 reference software (`g711.c`: `ulaw_compress`, `alaw_compress`,
`ulaw_expand`, `alaw_expand`) bit for bit. The G.191 encoders take the magnitude of a negative sample
as its one's complement (``~x``), which makes the code symmetric: ``encode(~x) == encode(x) ^ 0x80``.
The widely copied Sun `g711.c` (the revision with 13/14-bit magnitudes that CPython's `audioop`
carries) agrees with G.191 on every A-law code, but for mu-law it negates instead (``-x``): on 508
negative inputs that sit exactly on a quantisation boundary it picks the neighbouring code, one step
further from zero. The decoders all agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from avc.media.audio_format import LINE_RATE

__all__ = [
    "PCMA",
    "PCMU",
    "Bytes",
    "G711Codec",
    "alaw_decode",
    "alaw_encode",
    "codec_by_name",
    "ulaw_decode",
    "ulaw_encode",
]

Bytes: TypeAlias = bytes | bytearray | memoryview
"""What the decoders take: an RTP payload, or a slice of a receive buffer without copying it."""

"""G.711 samples per second; one byte per sample."""

# Decision thresholds of the eight mu-law segments on G.191's biased 13-bit magnitude: a magnitude's
# segment is how many of these it reaches.
_ULAW_SEGMENT_STARTS = np.array([64, 128, 256, 512, 1024, 2048, 4096], dtype=np.int32)
# A-law segment starts on G.191's 12-bit magnitude.
_ALAW_SEGMENT_STARTS = np.array([16, 32, 64, 128, 256, 512, 1024], dtype=np.int32)


def _all_int16_by_bit_pattern() -> npt.NDArray[np.int32]:
    """Every int16 value, at the index of its own unsigned bit pattern (0..32767, then -32768..-1)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


_Table = TypeVar("_Table", bound=np.ndarray[Any, Any])


def _frozen(table: _Table) -> _Table:
    table.flags.writeable = False
    return table


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_int16_by_bit_pattern()
    # G.191 ulaw_compress: 14-bit magnitude (one's complement for negatives) plus the bias of 33.
    biased = np.minimum((np.where(pcm < 0, ~pcm, pcm) >> 2) + 33, 0x1FFF)
    segment = np.searchsorted(_ULAW_SEGMENT_STARTS, biased, side="right").astype(np.int32)
    mantissa = (biased >> (segment + 1)) & 0x0F
    code = ((7 - segment) << 4) | (0x0F - mantissa)
    table: npt.NDArray[np.uint8] = np.where(pcm >= 0, code | 0x80, code).astype(np.uint8)
    return table


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_int16_by_bit_pattern()
    # G.191 alaw_compress: 12-bit magnitude (one's complement for negatives).
    magnitude = np.where(pcm < 0, ~pcm, pcm) >> 4
    segment = np.searchsorted(_ALAW_SEGMENT_STARTS, magnitude, side="right").astype(np.int32)
    # Segments 0 and 1 share one step size; above them the step doubles per segment.
    mantissa = np.where(segment == 0, magnitude, magnitude >> np.maximum(segment - 1, 0)) & 0x0F
    code = (segment << 4) | mantissa
    table: npt.NDArray[np.uint8] = (np.where(pcm >= 0, code | 0x80, code) ^ 0x55).astype(np.uint8)
    return table


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32)
    inverted = ~code & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    step = 4 << (exponent + 1)
    # G.191 ulaw_expand: reconstruct at the middle of the quantisation interval, then remove the bias.
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    return np.where(code < 0x80, -magnitude, magnitude).astype(np.int16)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32)
    toggled = (code ^ 0x55) & 0x7F
    exponent = toggled >> 4
    mantissa = toggled & 0x0F
    mantissa = np.where(exponent > 0, mantissa + 16, mantissa)
    magnitude = (mantissa << 4) + 0x08
    magnitude = np.where(exponent > 1, magnitude << np.maximum(exponent - 1, 0), magnitude)
    return np.where(code > 0x7F, magnitude, -magnitude).astype(np.int16)


ULAW_DECODE_TABLE: npt.NDArray[np.int16] = _frozen(_build_ulaw_decode())
"""int16 sample for each mu-law byte."""
ALAW_DECODE_TABLE: npt.NDArray[np.int16] = _frozen(_build_alaw_decode())
"""int16 sample for each A-law byte."""
ULAW_ENCODE_TABLE: npt.NDArray[np.uint8] = _frozen(_build_ulaw_encode())
"""mu-law byte for each int16 sample, indexed by the sample's uint16 bit pattern."""
ALAW_ENCODE_TABLE: npt.NDArray[np.uint8] = _frozen(_build_alaw_encode())
"""A-law byte for each int16 sample, indexed by the sample's uint16 bit pattern."""


def _decode(table: npt.NDArray[np.int16], data: Bytes) -> npt.NDArray[np.int16]:
    return table.take(np.frombuffer(data, dtype=np.uint8))


def _encode(table: npt.NDArray[np.uint8], pcm: npt.NDArray[np.int16]) -> bytes:
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16:
        got = pcm.dtype if isinstance(pcm, np.ndarray) else type(pcm).__name__
        raise TypeError(f"G.711 encodes int16 PCM in a numpy array, got {got}")
    return table.take(pcm.view(np.uint16)).tobytes()


def ulaw_decode(data: Bytes) -> npt.NDArray[np.int16]:
    """Decode mu-law bytes to a new int16 array, one sample per byte."""
    return _decode(ULAW_DECODE_TABLE, data)


def ulaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 PCM to mu-law, one byte per sample (C order); TypeError for any other dtype."""
    return _encode(ULAW_ENCODE_TABLE, pcm)


def alaw_decode(data: Bytes) -> npt.NDArray[np.int16]:
    """Decode A-law bytes to a new int16 array, one sample per byte."""
    return _decode(ALAW_DECODE_TABLE, data)


def alaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 PCM to A-law, one byte per sample (C order); TypeError for any other dtype."""
    return _encode(ALAW_ENCODE_TABLE, pcm)


@dataclass(frozen=True)
class G711Codec:
    """One G.711 variant as SDP names it: its static RTP payload type and the byte that means silence."""

    name: str
    payload_type: int
    silence_byte: int

    def __post_init__(self) -> None:
        if self.name not in _CODERS:
            raise ValueError(f"unknown G.711 variant {self.name!r}; expected one of {', '.join(_CODERS)}")
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"RTP payload type must be 0..127, got {self.payload_type}")
        if not 0 <= self.silence_byte <= 0xFF:
            raise ValueError(f"silence byte must be 0..255, got {self.silence_byte}")

    @property
    def clock_rate(self) -> int:
        return LINE_RATE

    def decode(self, data: Bytes) -> npt.NDArray[np.int16]:
        return _decode(_CODERS[self.name][0], data)

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        return _encode(_CODERS[self.name][1], pcm)

    def silence(self, samples: int) -> bytes:
        """`samples` bytes of encoded silence (the code nearest to zero)."""
        return bytes((self.silence_byte,)) * samples


_CODERS = MappingProxyType(
    {
        "PCMU": (ULAW_DECODE_TABLE, ULAW_ENCODE_TABLE),
        "PCMA": (ALAW_DECODE_TABLE, ALAW_ENCODE_TABLE),
    }
)

PCMU = G711Codec("PCMU", 0, 0xFF)
"""mu-law, RTP/AVP static payload type 0 (RFC 3551); 0xFF decodes to 0."""
PCMA = G711Codec("PCMA", 8, 0xD5)
"""A-law, RTP/AVP static payload type 8 (RFC 3551); 0xD5 decodes to +8, the smallest A-law level."""

_BY_NAME = MappingProxyType({codec.name: codec for codec in (PCMU, PCMA)})


def codec_by_name(name: str) -> G711Codec:
    """The codec for an SDP encoding name; case-insensitive, as SDP encoding names are (RFC 4855)."""
    try:
        return _BY_NAME[name.upper()]
    except KeyError:
        raise ValueError(f"unsupported codec {name!r}; expected one of {', '.join(_BY_NAME)}") from None

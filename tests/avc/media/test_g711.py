"""G.711 tables against slow per-sample reference algorithms, audioop, and the real SDP captures."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from avc.media.g711 import (
    ALAW_DECODE_TABLE,
    ALAW_ENCODE_TABLE,
    PCMA,
    PCMU,
    ULAW_DECODE_TABLE,
    ULAW_ENCODE_TABLE,
    G711Codec,
    alaw_decode,
    alaw_encode,
    codec_by_name,
    ulaw_decode,
    ulaw_encode,
)
from tests.support.captures import CAPTURE_DIR

FIXTURES = CAPTURE_DIR
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
ALL_CODES = bytes(range(256))


def _audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:  # removed in Python 3.13
            return None
    return audioop


audioop = _audioop()
needs_audioop = pytest.mark.skipif(audioop is None, reason="audioop is not importable in this Python")


# -- ITU-T G.191 reference software (g711.c), one sample at a time -------------------------------------


def g191_ulaw_compress(x: int) -> int:
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high_nibble = 0x0008 - segno
    low_nibble = 0x000F - ((absno >> segno) & 0x000F)
    code = (high_nibble << 4) | low_nibble
    return code | 0x0080 if x >= 0 else code


def g191_alaw_compress(x: int) -> int:
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x0080
    return ix ^ 0x0055


def g191_ulaw_expand(code: int) -> int:
    sign = -1 if code < 0x0080 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x0007
    segment = exponent + 1
    mantissa &= 0x000F
    step = 4 << segment
    return sign * ((0x0080 << exponent) + step * mantissa + step // 2 - 4 * 33)


def g191_alaw_expand(code: int) -> int:
    ix = (code ^ 0x0055) & 0x007F
    iexp = ix >> 4
    mant = ix & 0x000F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x0008
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


# -- Sun Microsystems g711.c (the revision with 13/14-bit magnitudes), one sample at a time ----------

SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _search(value: int, table: tuple[int, ...]) -> int:
    for index, end in enumerate(table):
        if value <= end:
            return index
    return len(table)


def sun_linear2ulaw(x: int) -> int:
    pcm = x >> 2
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, 8159) + (0x84 >> 2)
    seg = _search(pcm, SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0xF)) ^ mask


def sun_linear2alaw(x: int) -> int:
    pcm = x >> 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask, pcm = 0x55, -pcm - 1
    seg = _search(pcm, SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= ((pcm >> 1) if seg < 2 else (pcm >> seg)) & 0xF
    return aval ^ mask


def sun_ulaw2linear(code: int) -> int:
    u = ~code & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


def sun_alaw2linear(code: int) -> int:
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def _encode_all(reference: Callable[[int], int]) -> bytes:
    return bytes(reference(int(x)) for x in ALL_INT16)


# -- bit exactness -------------------------------------------------------------------------------------


def test_ulaw_encoder_matches_the_itu_g191_reference_for_every_int16_sample() -> None:
    assert ulaw_encode(ALL_INT16) == _encode_all(g191_ulaw_compress)


def test_alaw_encoder_matches_the_itu_g191_reference_for_every_int16_sample() -> None:
    assert alaw_encode(ALL_INT16) == _encode_all(g191_alaw_compress)


def test_decoders_match_the_itu_g191_and_sun_references_for_every_code() -> None:
    assert ulaw_decode(ALL_CODES).tolist() == [g191_ulaw_expand(c) for c in ALL_CODES]
    assert ulaw_decode(ALL_CODES).tolist() == [sun_ulaw2linear(c) for c in ALL_CODES]
    assert alaw_decode(ALL_CODES).tolist() == [g191_alaw_expand(c) for c in ALL_CODES]
    assert alaw_decode(ALL_CODES).tolist() == [sun_alaw2linear(c) for c in ALL_CODES]


def test_alaw_encoder_matches_sun_g711c_for_every_int16_sample() -> None:
    assert alaw_encode(ALL_INT16) == _encode_all(sun_linear2alaw)


def test_ulaw_encoder_differs_from_sun_g711c_only_where_sun_rounds_a_negative_magnitude_up() -> None:
    sun = np.frombuffer(_encode_all(sun_linear2ulaw), dtype=np.uint8)
    ours = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8)
    non_negative = ALL_INT16 >= 0
    assert np.array_equal(sun[non_negative], ours[non_negative])
    # Sun negates (-x >> 2 rounds the magnitude up), G.191 takes the one's complement (~x >> 2):
    # Sun's code for x is G.191's code for x - 4, one 14-bit step further from zero.
    negative = ALL_INT16[~non_negative]
    shifted = np.maximum(negative.astype(np.int32) - 4, -32768).astype(np.int16)
    assert np.array_equal(sun[~non_negative], np.frombuffer(ulaw_encode(shifted), dtype=np.uint8))
    differing = int(np.count_nonzero(sun != ours))
    assert differing == 508  # only samples on a quantisation boundary, out of 32,768 negatives


@needs_audioop
def test_audioop_agrees_on_alaw_and_on_ulaw_up_to_its_rounding_of_negative_magnitudes() -> None:
    assert audioop is not None
    raw = ALL_INT16.astype("<i2").tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert audioop.lin2alaw(raw, 2) == alaw_encode(ALL_INT16)
        assert audioop.lin2ulaw(raw, 2) == _encode_all(sun_linear2ulaw)
        assert audioop.ulaw2lin(ALL_CODES, 2) == ulaw_decode(ALL_CODES).astype("<i2").tobytes()
        assert audioop.alaw2lin(ALL_CODES, 2) == alaw_decode(ALL_CODES).astype("<i2").tobytes()


def test_ulaw_is_symmetric_under_ones_complement_as_g191_defines_it() -> None:
    codes = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8)
    mirrored = np.frombuffer(ulaw_encode(~ALL_INT16), dtype=np.uint8)
    assert np.array_equal(mirrored, codes ^ 0x80)


# -- tables and round trips ------------------------------------------------------------------------------


def test_every_alaw_code_and_every_ulaw_code_but_negative_zero_survive_decode_then_encode() -> None:
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF  # mu-law has two zeros; 0 encodes as the positive one
    assert ulaw_encode(ulaw_decode(ALL_CODES)) == bytes(expected)


def test_lookup_tables_are_read_only_and_sized_for_bytes_and_int16() -> None:
    tables: list[tuple[np.ndarray[Any, Any], int, type[np.generic]]] = [
        (ULAW_DECODE_TABLE, 256, np.int16),
        (ALAW_DECODE_TABLE, 256, np.int16),
        (ULAW_ENCODE_TABLE, 65536, np.uint8),
        (ALAW_ENCODE_TABLE, 65536, np.uint8),
    ]
    for table, size, dtype in tables:
        assert table.shape == (size,) and table.dtype == dtype
        assert not table.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            table[0] = 1


def test_decoding_a_20ms_frame_gives_160_int16_samples_from_bytes_or_memoryview() -> None:
    frame = bytes(range(96, 256))
    pcm = PCMU.decode(frame)
    assert pcm.dtype == np.int16 and pcm.shape == (160,)
    assert np.array_equal(PCMU.decode(memoryview(frame)), pcm)
    assert PCMU.decode(b"").shape == (0,)


def test_encoding_accepts_strided_views_and_keeps_sample_order() -> None:
    pcm = np.arange(-16000, 16000, 100, dtype=np.int16)
    assert alaw_encode(pcm[::2]) == alaw_encode(pcm[::2].copy())
    assert ulaw_encode(pcm[::-1]) == ulaw_encode(pcm)[::-1]


@pytest.mark.parametrize(
    "bad", [np.zeros(160, dtype=np.float32), np.zeros(160, dtype=np.int32), [0] * 160, b"\0" * 320]
)
def test_encoding_anything_but_an_int16_array_raises_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="int16"):
        PCMA.encode(bad)  # type: ignore[arg-type]


def test_signed_extremes_encode_to_the_outermost_codes() -> None:
    extremes = np.array([32767, -32768], dtype=np.int16)
    assert ulaw_encode(extremes) == b"\x80\x00"
    assert alaw_encode(extremes) == b"\xaa\x2a"


# -- codecs ---------------------------------------------------------------------------------------------


def test_codec_payload_types_and_rates_match_the_rtpmap_in_the_real_opensips_offer() -> None:
    offer = (FIXTURES / "02_call1_caller_hangs_up_sipp_messages.log").read_text()
    rtpmaps = dict(re.findall(r"a=rtpmap:(\d+) (\w+)/8000", offer))
    assert rtpmaps["0"] == "PCMU"
    codec = codec_by_name(rtpmaps["0"])
    assert codec is PCMU
    assert (codec.payload_type, codec.clock_rate) == (0, 8000)
    assert PCMA.payload_type == 8


def test_silence_bytes_decode_to_the_level_nearest_zero() -> None:
    assert PCMU.decode(PCMU.silence(160)).tolist() == [0] * 160
    assert PCMA.decode(PCMA.silence(160)).tolist() == [8] * 160
    assert PCMU.encode(np.zeros(160, dtype=np.int16)) == PCMU.silence(160)
    assert PCMA.encode(np.zeros(160, dtype=np.int16)) == PCMA.silence(160)


def test_codec_by_name_ignores_case_and_rejects_unknown_names_with_value_error() -> None:
    assert codec_by_name("pcma") is PCMA
    assert codec_by_name("PcMu") is PCMU
    with pytest.raises(ValueError, match="unsupported codec 'G722'"):
        codec_by_name("G722")


def test_codec_methods_use_their_own_law() -> None:
    pcm = np.array([1000, -1000, 20000], dtype=np.int16)
    assert PCMU.encode(pcm) == ulaw_encode(pcm)
    assert PCMA.encode(pcm) == alaw_encode(pcm)
    assert PCMU.encode(pcm) != PCMA.encode(pcm)


def test_constructing_a_codec_for_an_unknown_law_or_bad_values_fails_clearly() -> None:
    with pytest.raises(ValueError, match=r"unknown G\.711 variant"):
        G711Codec("G729", 18, 0)
    with pytest.raises(ValueError, match="payload type"):
        G711Codec("PCMU", 128, 0xFF)
    with pytest.raises(ValueError, match="silence byte"):
        G711Codec("PCMU", 0, 256)

"""The ElevenLabs provider against a local server that streams raw 8 kHz mu-law like the real API.

The double encodes its tone with the reference G.711 encoder of `demo.rtp_peer`, so the
decoding checked here is compared against code that is not the code under test.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import numpy as np
import pytest

from demo.rtp_peer import ulaw_decode, ulaw_to_linear
from engines.base import Tts
from engines.errors import EngineConfigError, EngineInputError
from engines.resilience import EngineUnavailableError
from engines.tts.elevenlabs import MU_LAW_TO_PCM16, ElevenLabsTts, load, mu_law_decode
from tests.support.cloud import CLOUD_MANIFEST, ELEVENLABS_KEY, FAST, drain
from tests.support.cloud.elevenlabs_server import (
    SAMPLES_PER_CHARACTER,
    TONE_AMPLITUDE,
    TONE_HZ,
    ElevenLabsDouble,
    SpeechReply,
    tone_ulaw,
)

T = TypeVar("T")

TEXT = "Your balance is forty-two euros."


# -- mu-law -------------------------------------------------------------------------------------------------------


def test_decode_table_matches_the_g711_reference_for_every_code() -> None:
    assert MU_LAW_TO_PCM16.tolist() == [ulaw_to_linear(code) for code in range(256)]
    assert (MU_LAW_TO_PCM16[0xFF], MU_LAW_TO_PCM16[0x7F], MU_LAW_TO_PCM16[0x00], MU_LAW_TO_PCM16[0x80]) == (
        0,
        0,
        -32124,
        32124,
    )
    assert not MU_LAW_TO_PCM16.flags.writeable


def test_decode_gives_one_int16_sample_per_byte() -> None:
    samples = mu_law_decode(bytes([0xFF, 0x80, 0x00, 0x7E]))
    assert samples.dtype == np.int16
    assert samples.tolist() == [0, 32124, -32124, -8]


# -- streaming ----------------------------------------------------------------------------------------------------


async def test_stream_ulaw_hands_on_the_servers_bytes_untouched(
    elevenlabs_tts: ElevenLabsTts, elevenlabs_server: ElevenLabsDouble
) -> None:
    chunks = await drain(elevenlabs_tts.stream_ulaw(TEXT))
    assert b"".join(chunks) == tone_ulaw(TEXT)
    [request] = elevenlabs_server.requests
    assert request.voice_id == "JBFqnCBsd6RMkjVDRZzb"
    assert request.query == {"output_format": "ulaw_8000"}
    assert request.body == {"text": TEXT, "model_id": "eleven_flash_v2_5"}
    assert request.headers["xi-api-key"] == ELEVENLABS_KEY
    assert "Authorization" not in request.headers


async def test_stream_yields_int16_pcm_at_8khz(elevenlabs_tts: ElevenLabsTts) -> None:
    assert isinstance(elevenlabs_tts, Tts)
    assert elevenlabs_tts.sample_rate == 8000
    chunks = await drain(elevenlabs_tts.stream(TEXT))
    assert all(chunk.dtype == np.int16 for chunk in chunks)
    pcm = np.concatenate(chunks)
    assert len(pcm) == len(TEXT) * SAMPLES_PER_CHARACTER
    assert np.array_equal(pcm, ulaw_decode(tone_ulaw(TEXT)))
    # And it is the tone the double spoke, within mu-law's quantisation step at that level.
    tone = TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * np.arange(len(pcm)) / 8000)
    assert np.max(np.abs(pcm - tone)) < 300


async def test_voice_model_language_and_zero_retention_options_are_sent(elevenlabs_server: ElevenLabsDouble) -> None:
    engine = load(
        CLOUD_MANIFEST,
        {
            **FAST,
            "voice_id": "21m00Tcm4TlvDq8ikWAM",
            "model_id": "eleven_turbo_v2_5",
            "language_code": "en",
            "zero_retention": True,
        },
    )
    try:
        await drain(engine.stream_ulaw("Hello."))
    finally:
        await engine.aclose()
    [request] = elevenlabs_server.requests
    assert request.voice_id == "21m00Tcm4TlvDq8ikWAM"
    assert request.query == {"output_format": "ulaw_8000", "enable_logging": "false"}
    assert request.body == {"text": "Hello.", "model_id": "eleven_turbo_v2_5", "language_code": "en"}


async def test_blank_text_sends_no_request(elevenlabs_tts: ElevenLabsTts, elevenlabs_server: ElevenLabsDouble) -> None:
    assert await drain(elevenlabs_tts.stream(" \n")) == []
    assert elevenlabs_server.requests == []


async def test_text_over_max_text_chars_is_refused_locally(
    elevenlabs_tts: ElevenLabsTts, elevenlabs_server: ElevenLabsDouble
) -> None:
    with pytest.raises(EngineInputError, match="exceeds max_text_chars=2000"):
        await drain(elevenlabs_tts.stream("a" * 2001))
    assert elevenlabs_server.requests == []


async def test_text_the_server_rejects_is_an_input_error_not_retried(elevenlabs_server: ElevenLabsDouble) -> None:
    engine = load(CLOUD_MANIFEST, {**FAST, "max_text_chars": 10_000})
    try:
        with pytest.raises(EngineInputError, match=r"HTTP 422 \(string_too_long\)"):
            await drain(engine.stream("a" * 6000))
    finally:
        await engine.aclose()
    assert len(elevenlabs_server.requests) == 1


async def test_closing_early_leaves_the_engine_usable(
    elevenlabs_tts: ElevenLabsTts, elevenlabs_server: ElevenLabsDouble
) -> None:
    elevenlabs_server.replies.append(SpeechReply(chunk_delay_s=0.01))
    stream = elevenlabs_tts.stream_ulaw(TEXT)
    assert len(await anext(stream)) > 0
    await stream.aclose()  # the caller barged in
    assert b"".join(await drain(elevenlabs_tts.stream_ulaw(TEXT))) == tone_ulaw(TEXT)


# -- failures -----------------------------------------------------------------------------------------------------


async def test_wrong_key_is_a_typed_401_that_never_shows_the_key(
    elevenlabs_server: ElevenLabsDouble, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "sk_WRONGVOICEKEY987654"
    monkeypatch.setenv("ELEVENLABS_API_KEY", wrong_key)
    engine = load(CLOUD_MANIFEST, FAST)
    try:
        with pytest.raises(EngineUnavailableError, match=r"HTTP 401 \(invalid_api_key\)") as raised:
            await drain(engine.stream(TEXT))
    finally:
        await engine.aclose()
    assert not raised.value.retryable
    assert len(elevenlabs_server.requests) == 1
    assert elevenlabs_server.requests[0].headers["xi-api-key"] == wrong_key
    for text in (str(raised.value), repr(raised.value), repr(engine.__dict__), caplog.text):
        assert wrong_key not in text and "WRONGVOICEKEY" not in text


async def test_busy_server_before_the_first_byte_is_retried(
    elevenlabs_tts: ElevenLabsTts, elevenlabs_server: ElevenLabsDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    elevenlabs_server.replies.append(SpeechReply(status=503))
    assert b"".join(await drain(elevenlabs_tts.stream_ulaw(TEXT))) == tone_ulaw(TEXT)
    assert len(elevenlabs_server.requests) == 2
    assert "HTTP 503 (system_busy)" in caplog.text
    assert ELEVENLABS_KEY not in caplog.text


async def test_stall_before_the_first_byte_times_out_and_is_retried(elevenlabs_server: ElevenLabsDouble) -> None:
    elevenlabs_server.replies.append(SpeechReply(stall_before_headers=True))
    engine = load(CLOUD_MANIFEST, {**FAST, "first_byte_timeout": 0.1})
    try:
        assert b"".join(await drain(engine.stream_ulaw(TEXT))) == tone_ulaw(TEXT)
    finally:
        await engine.aclose()
    assert len(elevenlabs_server.requests) == 2


async def test_stall_after_audio_began_times_out_without_retry(elevenlabs_server: ElevenLabsDouble) -> None:
    elevenlabs_server.replies.append(SpeechReply(stall_after_bytes=500))
    engine = load(CLOUD_MANIFEST, {**FAST, "connect_timeout": 0.1, "first_byte_timeout": 0.1, "total_timeout": 0.3})
    delivered: list[bytes] = []
    try:
        with pytest.raises(EngineUnavailableError, match=r"total timeout after 0\.3 s"):
            await drain(engine.stream_ulaw(TEXT), delivered)
    finally:
        await engine.aclose()
    assert b"".join(delivered) == tone_ulaw(TEXT)[:500]
    assert len(elevenlabs_server.requests) == 1


async def test_connection_cut_after_audio_began_is_not_retried(
    elevenlabs_tts: ElevenLabsTts, elevenlabs_server: ElevenLabsDouble
) -> None:
    elevenlabs_server.replies.append(SpeechReply(drop_after_bytes=600))
    delivered: list[bytes] = []
    with pytest.raises(EngineUnavailableError, match="ClientPayloadError"):
        await drain(elevenlabs_tts.stream_ulaw(TEXT), delivered)
    assert b"".join(delivered) == tone_ulaw(TEXT)[:600]
    assert len(elevenlabs_server.requests) == 1


# -- configuration ------------------------------------------------------------------------------------------------


def test_missing_key_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    with pytest.raises(EngineConfigError, match="ELEVENLABS_API_KEY"):
        load(CLOUD_MANIFEST, {})


@pytest.mark.parametrize(
    "options",
    [{"voice_id": "../../v1/user"}, {"voice_id": ""}, {"model_id": "a b"}, {"max_text_chars": 0}, {"voice": "x"}],
)
def test_bad_options_stop_start_up(monkeypatch: pytest.MonkeyPatch, options: dict[str, object]) -> None:
    monkeypatch.setenv("ELEVENLABS_API_KEY", ELEVENLABS_KEY)
    with pytest.raises(EngineConfigError, match="tts elevenlabs"):
        load(CLOUD_MANIFEST, options)


def test_default_endpoint_is_the_elevenlabs_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVENLABS_API_KEY", ELEVENLABS_KEY)
    monkeypatch.delenv("ELEVENLABS_BASE_URL", raising=False)
    engine = load(CLOUD_MANIFEST, {})
    assert str(engine.url) == "https://api.elevenlabs.io/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream"
    engine.close()

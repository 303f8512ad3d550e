"""ElevenLabs streaming speech synthesis, asked for in the telephone's own format: 8 kHz mu-law.

`POST {base}/v1/text-to-speech/{voice_id}/stream?output_format=ulaw_8000` with the key in the
`xi-api-key` header answers with a chunked body of raw G.711 mu-law bytes (no container, one
byte per sample), sent as it is synthesised. `stream_ulaw` hands those bytes on untouched, so a
PCMU call can put them straight into RTP; `stream` decodes them to int16 PCM for everything else.
Chunks arrive in whatever sizes the network delivers; since every byte is a whole sample, no
chunk needs re-aligning.

The mu-law table lives here rather than in `avc.media.g711` because engines must not import the
connector. Attempts that fail before the first audio byte are retried (`engines.resilience`);
the key comes from `ELEVENLABS_API_KEY`, the base URL from the option or `ELEVENLABS_BASE_URL`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt

from engines.base import Pcm16
from engines.cloud import ApiKey, CloudOptions, HttpClient, api_key_from_env, base_url
from engines.errors import EngineInputError
from engines.manifest import Manifest
from engines.options import parse_options
from engines.resilience import retry_stream

DEFAULT_BASE_URL: Final = "https://api.elevenlabs.io"
API_KEY_VARIABLE: Final = "ELEVENLABS_API_KEY"
BASE_URL_VARIABLE: Final = "ELEVENLABS_BASE_URL"
OUTPUT_FORMAT: Final = "ulaw_8000"
SAMPLE_RATE: Final = 8000
# The voice id becomes a path segment of the URL, so it is held to the form ElevenLabs ids take.
_VOICE_ID: Final = re.compile(r"[A-Za-z0-9]{1,64}")
_MODEL_ID: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _mu_law_table() -> npt.NDArray[np.int16]:
    """ITU-T G.711 mu-law expansion of all 256 codes (0xFF and 0x7F are silence, 0x00 is -32124)."""
    codes = ~np.arange(256, dtype=np.int32) & 0xFF  # codes are sent with all bits inverted
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    table = np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)
    table.setflags(write=False)
    return table


MU_LAW_TO_PCM16: Final = _mu_law_table()


def mu_law_decode(data: bytes) -> Pcm16:
    """int16 PCM samples of G.711 mu-law bytes, one sample per byte."""
    return MU_LAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)]


@dataclass(frozen=True, slots=True)
class ElevenLabsOptions(CloudOptions):
    voice_id: str = "JBFqnCBsd6RMkjVDRZzb"
    model_id: str = "eleven_flash_v2_5"
    language_code: str | None = None
    zero_retention: bool = False
    """Send `enable_logging=false`: ElevenLabs keeps no history of the text (an enterprise feature)."""
    max_text_chars: int = 2000
    total_timeout: float = 30.0

    def __post_init__(self) -> None:
        CloudOptions.__post_init__(self)
        if not _VOICE_ID.fullmatch(self.voice_id):
            raise ValueError(f"voice_id must be 1-64 letters and digits, got {self.voice_id!r}")
        if not _MODEL_ID.fullmatch(self.model_id):
            raise ValueError(f"model_id {self.model_id!r} is not a valid model id")
        if self.max_text_chars < 1:
            raise ValueError("max_text_chars must be >= 1")


class ElevenLabsTts:
    """An ElevenLabs voice, shared by every call of the process."""

    name: ClassVar[str] = "elevenlabs"

    def __init__(self, options: ElevenLabsOptions, api_key: ApiKey) -> None:
        self.options = options
        self._api_key = api_key
        base = base_url(options.base_url, BASE_URL_VARIABLE, DEFAULT_BASE_URL, "tts elevenlabs")
        self.url = base / "v1" / "text-to-speech" / options.voice_id / "stream"
        self._params = {"output_format": OUTPUT_FORMAT}
        if options.zero_retention:
            self._params["enable_logging"] = "false"
        self._http = HttpClient(self.name, options.timeouts(), max_connections=options.max_connections)
        self._retry = options.retry_policy()

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    async def stream_ulaw(self, text: str) -> AsyncGenerator[bytes, None]:
        """Synthesise `text` as 8 kHz G.711 mu-law bytes, as they arrive; `aclose()` it to stop early."""
        if len(text) > self.options.max_text_chars:
            raise EngineInputError(
                f"text of {len(text)} characters exceeds max_text_chars={self.options.max_text_chars}"
            )
        if not text.strip():
            return
        body: dict[str, str] = {"text": text, "model_id": self.options.model_id}
        if self.options.language_code:
            body["language_code"] = self.options.language_code
        headers = {"xi-api-key": self._api_key.reveal()}

        def attempt() -> AsyncGenerator[bytes, None]:
            return self._http.stream_post(
                self.url,
                headers=headers,
                body=body,
                params=self._params,
                content_types=("audio/", "application/octet-stream"),
            )

        # Retries end with the first audio byte: after it, the caller may already be hearing it.
        async with aclosing(retry_stream(attempt, self._retry, label=self.name)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def stream(self, text: str) -> AsyncGenerator[Pcm16, None]:
        async with aclosing(self.stream_ulaw(text)) as chunks:
            async for chunk in chunks:
                yield mu_law_decode(chunk)

    async def aclose(self) -> None:
        await self._http.aclose()

    def close(self) -> None:
        self._http.close()


def load(manifest: Manifest, options: Mapping[str, object]) -> ElevenLabsTts:
    """Registry factory: `{"tts": {"provider": "elevenlabs", "voice_id": "..."}}`; needs ELEVENLABS_API_KEY."""
    del manifest  # a cloud voice has no local files
    parsed = parse_options(ElevenLabsOptions, options, "tts elevenlabs")
    return ElevenLabsTts(parsed, api_key_from_env(API_KEY_VARIABLE, "tts elevenlabs"))

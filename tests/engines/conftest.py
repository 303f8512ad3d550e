"""Fixtures shared by the engine tests: the installed model manifest, real test speech, and the cloud providers
against their local API doubles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from engines.manifest import Manifest
from tests.engines.installed import Recording, installed_manifest, recordings, require_model

if TYPE_CHECKING:
    from engines.llm.openai import OpenAiLlm
    from engines.tts.elevenlabs import ElevenLabsTts
    from engines.tts.piper import PiperTts
    from tests.support.cloud.elevenlabs_server import ElevenLabsDouble
    from tests.support.cloud.openai_server import OpenAiDouble


@pytest.fixture(scope="session")
def manifest() -> Manifest:
    return installed_manifest()


@pytest.fixture(scope="session")
def librivox(manifest: Manifest) -> list[Recording]:
    """Five real read-speech recordings (16 kHz) with their reference transcripts."""
    return recordings(require_model(manifest, "pocketsphinx-testdata") / "librivox", "transcription")


@pytest.fixture(scope="session")
def cards(manifest: Manifest) -> list[Recording]:
    """Five short real recordings of playing-card names ("ten of clubs"), 16 kHz."""
    return recordings(require_model(manifest, "pocketsphinx-testdata") / "cards", "cards.transcription")


@pytest.fixture(scope="session")
def voice(manifest: Manifest) -> Iterator[PiperTts]:
    """The Piper voice, loaded once: the TTS tests use it, and the ASR tests use it to make speech."""
    pytest.importorskip("piper", reason="the `local` extra (piper-tts) is not installed")
    from engines.tts.piper import load

    require_model(manifest, "piper-joe-medium")
    engine = load(manifest, {})
    yield engine
    engine.close()


# -- the cloud providers against their local API doubles (imported here, not above: aiohttp is the cloud extra's) --


@pytest.fixture
async def openai_server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OpenAiDouble]:
    """The OpenAI API double, with its key and base URL in the environment exactly as in production."""
    from tests.support.cloud import OPENAI_KEY, serving
    from tests.support.cloud.openai_server import OpenAiDouble

    async with serving(OpenAiDouble(OPENAI_KEY), monkeypatch) as double:
        yield double


@pytest.fixture
async def openai_llm(openai_server: OpenAiDouble) -> AsyncIterator[OpenAiLlm]:
    """The OpenAI provider, loaded with the fast test options, talking to `openai_server`."""
    from engines.llm.openai import load
    from tests.support.cloud import CLOUD_MANIFEST, FAST

    engine = load(CLOUD_MANIFEST, FAST)
    yield engine
    await engine.aclose()


@pytest.fixture
async def elevenlabs_server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ElevenLabsDouble]:
    """The ElevenLabs API double, with its key and base URL in the environment exactly as in production."""
    from tests.support.cloud import ELEVENLABS_KEY, serving
    from tests.support.cloud.elevenlabs_server import ElevenLabsDouble

    async with serving(ElevenLabsDouble(ELEVENLABS_KEY), monkeypatch) as double:
        yield double


@pytest.fixture
async def elevenlabs_tts(elevenlabs_server: ElevenLabsDouble) -> AsyncIterator[ElevenLabsTts]:
    """The ElevenLabs provider, loaded with the fast test options, talking to `elevenlabs_server`."""
    from engines.tts.elevenlabs import load
    from tests.support.cloud import CLOUD_MANIFEST, FAST

    engine = load(CLOUD_MANIFEST, FAST)
    yield engine
    await engine.aclose()

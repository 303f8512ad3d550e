"""Fixtures shared by the engine tests: the installed model manifest and real test speech."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from engines.manifest import Manifest
from tests.engines.installed import Recording, installed_manifest, recordings, require_model

if TYPE_CHECKING:
    from engines.tts.piper import PiperTts


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

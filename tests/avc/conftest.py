"""Fixtures shared by the connector's tests that run the engine chain with the real local models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from avc.config import Settings
from avc.conversation.engine_setup import engine_config
from engines.manifest import Manifest
from engines.registry import Engines, build_engines


@pytest.fixture(scope="session")
def engines() -> Iterator[Engines]:
    """Silero, Whisper tiny.en, SmolLM2 (plumbing: fast, weak answers) and Piper, loaded once for the session."""
    loaded = build_engines(engine_config(Settings(llm_model="smollm2-135m")), Manifest.load(Path(".models")))
    yield loaded
    loaded.close()

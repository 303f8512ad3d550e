"""Access to the models `make models` installed, skipping (with the reason) when one is absent."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from engines.errors import EngineError
from engines.manifest import DEFAULT_MODELS_DIR, Manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / DEFAULT_MODELS_DIR


@dataclass(frozen=True, slots=True)
class Recording:
    path: Path
    transcript: str


def installed_manifest() -> Manifest:
    """The manifest `make models` wrote, or a skip that says to run it."""
    try:
        return Manifest.load(MODELS_DIR)
    except EngineError as exc:
        pytest.skip(str(exc))


def require_model(manifest: Manifest, name: str) -> Path:
    try:
        return manifest.path(name)
    except EngineError as exc:
        pytest.skip(str(exc))


def recordings(folder: Path, transcription: str) -> list[Recording]:
    """Recordings listed in a pocketsphinx transcription file: `<s> words </s> (file id)`."""
    listed = []
    for line in (folder / transcription).read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"<s> (.*?) *</s> \((.+)\)", line.strip())
        assert match, f"unexpected transcription line {line!r}"
        listed.append(Recording(folder / f"{match[2]}.wav", match[1]))
    return listed

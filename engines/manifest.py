"""The model manifest: the local path, size and sha256 of every installed model.

`python -m engines.models` writes `.models/manifest.json`; providers only ever open models
through it, so nothing is looked up or downloaded at run time. A model is either one file
(an ONNX or GGUF file) or a folder of files (a CTranslate2 Whisper model). A folder's digest is
the sha256 of its `sha256sum`-style listing, so it can be checked with standard tools:
`(cd .models/whisper-tiny.en && sha256sum * | LC_ALL=C sort -k2) | sha256sum`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from engines.errors import MAKE_MODELS_HINT, ModelIntegrityError, ModelMissingError

MANIFEST_NAME: Final = "manifest.json"
DEFAULT_MODELS_DIR: Final = Path(".models")
_CHUNK: Final = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large models do not fill memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def listing_sha256(files: Iterable[tuple[str, str]]) -> str:
    """Digest of a folder given (relative path, hex sha256) pairs, in `sha256sum` listing form."""
    listing = "".join(f"{sha}  {rel}\n" for rel, sha in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest()


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def disk_size(path: Path) -> int:
    """Bytes of a model file, or of all files of a model folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in _folder_files(path))
    return path.stat().st_size


def disk_sha256(path: Path) -> str:
    """Digest of a model file, or of a model folder as `listing_sha256` defines it."""
    if path.is_dir():
        return listing_sha256((p.relative_to(path).as_posix(), file_sha256(p)) for p in _folder_files(path))
    return file_sha256(path)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One installed model; `path` is absolute, `source` says which package it came from."""

    name: str
    path: Path
    sha256: str
    size: int
    source: str = ""

    def to_json(self, root: Path) -> dict[str, Any]:
        rel = os.path.relpath(self.path, root)
        return {"path": Path(rel).as_posix(), "sha256": self.sha256, "size": self.size, "source": self.source}

    @classmethod
    def from_json(cls, name: str, raw: object, root: Path) -> ModelEntry:
        if not isinstance(raw, dict):
            raise ModelIntegrityError(f"manifest entry {name!r} is not an object")
        path, sha256, size, source = raw.get("path"), raw.get("sha256"), raw.get("size"), raw.get("source", "")
        if not isinstance(path, str) or not isinstance(sha256, str) or not isinstance(source, str):
            raise ModelIntegrityError(f"manifest entry {name!r} needs string 'path' and 'sha256'")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ModelIntegrityError(f"manifest entry {name!r} needs a non-negative integer 'size'")
        # Relative paths keep the models folder relocatable (a container image copies it elsewhere).
        return cls(name=name, path=(root / path).resolve(), sha256=sha256, size=size, source=source)


@dataclass(frozen=True, slots=True)
class Manifest:
    """The models installed under `root`, by name."""

    root: Path
    entries: Mapping[str, ModelEntry]

    @classmethod
    def load(cls, models_dir: Path = DEFAULT_MODELS_DIR) -> Manifest:
        """Read `<models_dir>/manifest.json`; a missing manifest says to run `make models`."""
        manifest_path = models_dir / MANIFEST_NAME
        try:
            text = manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelMissingError(f"no model manifest at {manifest_path}") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelIntegrityError(f"{manifest_path} is not valid JSON ({exc}); {MAKE_MODELS_HINT}") from None
        if not isinstance(raw, dict):
            raise ModelIntegrityError(f"{manifest_path} must hold a JSON object; {MAKE_MODELS_HINT}")
        root = models_dir.resolve()
        return cls(root=root, entries={name: ModelEntry.from_json(name, value, root) for name, value in raw.items()})

    def entry(self, name: str) -> ModelEntry:
        """The entry for `name`, checked cheaply (exists, right size); hashing is `verify`'s job."""
        entry = self.entries.get(name)
        if entry is None:
            raise ModelMissingError(f"model {name!r} is not in {self.root / MANIFEST_NAME}")
        if not entry.path.exists():
            raise ModelMissingError(f"model {name!r} is listed but {entry.path} does not exist")
        size = disk_size(entry.path)
        if size != entry.size:
            raise ModelIntegrityError(f"model {name!r} at {entry.path} is {size} bytes, manifest says {entry.size}")
        return entry

    def path(self, name: str) -> Path:
        """Local path of model `name` (file or folder), ready to load."""
        return self.entry(name).path

    def verify(self, name: str) -> None:
        """Re-hash model `name` on disk against the manifest (slow for large models)."""
        entry = self.entry(name)
        actual = disk_sha256(entry.path)
        if actual != entry.sha256:
            raise ModelIntegrityError(f"model {name!r} at {entry.path} has sha256 {actual}, expected {entry.sha256}")

    def to_json(self) -> dict[str, Any]:
        return {name: entry.to_json(self.root) for name, entry in sorted(self.entries.items())}

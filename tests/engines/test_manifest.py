"""The manifest reader: missing or damaged models are clear errors that name `make models`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from engines.errors import ModelIntegrityError, ModelMissingError
from engines.manifest import MANIFEST_NAME, Manifest, disk_sha256, listing_sha256


def _write(root: Path, entries: dict[str, object]) -> None:
    (root / MANIFEST_NAME).write_text(json.dumps(entries), encoding="utf-8")


def test_missing_manifest_says_to_run_make_models(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="make models"):
        Manifest.load(tmp_path)


def test_model_absent_from_manifest_says_to_run_make_models(tmp_path: Path) -> None:
    _write(tmp_path, {})
    with pytest.raises(ModelMissingError, match=r"'whisper-tiny.en'.*make models"):
        Manifest.load(tmp_path).path("whisper-tiny.en")


def test_listed_but_deleted_model_says_to_run_make_models(tmp_path: Path) -> None:
    _write(tmp_path, {"vad": {"path": "vad/model.onnx", "sha256": "00", "size": 3}})
    with pytest.raises(ModelMissingError, match=r"does not exist.*make models"):
        Manifest.load(tmp_path).path("vad")


def test_relative_path_resolves_against_the_models_folder(tmp_path: Path) -> None:
    (tmp_path / "vad").mkdir()
    (tmp_path / "vad" / "model.onnx").write_bytes(b"abc")
    _write(tmp_path, {"vad": {"path": "vad/model.onnx", "sha256": hashlib.sha256(b"abc").hexdigest(), "size": 3}})
    manifest = Manifest.load(tmp_path)
    assert manifest.path("vad") == (tmp_path / "vad" / "model.onnx").resolve()
    manifest.verify("vad")


def test_truncated_file_is_an_integrity_error(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"ab")
    _write(tmp_path, {"llm": {"path": "m.gguf", "sha256": "00", "size": 3}})
    with pytest.raises(ModelIntegrityError, match="2 bytes, manifest says 3"):
        Manifest.load(tmp_path).path("llm")


def test_verify_detects_a_file_with_the_right_size_but_other_bytes(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"abd")
    _write(tmp_path, {"llm": {"path": "m.gguf", "sha256": hashlib.sha256(b"abc").hexdigest(), "size": 3}})
    with pytest.raises(ModelIntegrityError, match="sha256"):
        Manifest.load(tmp_path).verify("llm")


@pytest.mark.parametrize(
    "content",
    ["not json", "[1, 2]", '{"vad": "x"}', '{"vad": {"path": "a", "sha256": "b", "size": -1}}'],
)
def test_malformed_manifest_is_an_integrity_error(tmp_path: Path, content: str) -> None:
    (tmp_path / MANIFEST_NAME).write_text(content, encoding="utf-8")
    with pytest.raises(ModelIntegrityError):
        Manifest.load(tmp_path)


def test_folder_digest_is_the_sha256sum_listing_of_its_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_bytes(b"bee")
    (tmp_path / "sub" / "a.txt").write_bytes(b"ay")
    sha_a, sha_b = hashlib.sha256(b"ay").hexdigest(), hashlib.sha256(b"bee").hexdigest()
    # What `sha256sum b.txt sub/a.txt | sha256sum` prints, with the paths sorted bytewise.
    listing = f"{sha_b}  b.txt\n{sha_a}  sub/a.txt\n"
    assert disk_sha256(tmp_path) == hashlib.sha256(listing.encode()).hexdigest()
    assert listing_sha256([("sub/a.txt", sha_a), ("b.txt", sha_b)]) == disk_sha256(tmp_path)


def test_to_json_round_trips_with_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"abc")
    _write(tmp_path, {"vad": {"path": "m.onnx", "sha256": "ff", "size": 3, "source": "pkg==1"}})
    assert Manifest.load(tmp_path).to_json() == {
        "vad": {"path": "m.onnx", "sha256": "ff", "size": 3, "source": "pkg==1"}
    }

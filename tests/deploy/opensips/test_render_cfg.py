"""deploy/opensips/render-cfg.sh, run for real by /bin/sh on the committed opensips/*.cfg.

The script is the entrypoint of the OpenSIPS image: it must change exactly the "# SITE" lines, refuse
values that could inject OpenSIPS script, and refuse to start with a SITE line it does not know.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.deploy.support import DEPLOY, REPO_ROOT

SCRIPT = DEPLOY / "opensips" / "render-cfg.sh"
EDGE_CFG = REPO_ROOT / "opensips" / "edge.cfg"
AI_NODE_CFG = REPO_ROOT / "opensips" / "ai-node.cfg"
HEADER_LINES = 5  # the comment, stderror_enabled, syslog_enabled and a blank line the script prepends
EDGE_ENV = {"OPENSIPS_SOCKET": "udp:10.20.0.11:5060", "OPENSIPS_DB_URL": "postgres://opensips:s3cr&t|x\\y@pg.bank/avc"}
AI_NODE_ENV = {"OPENSIPS_SOCKET": "udp:10.20.0.21:5070", "OPENSIPS_EDGE_IPS": "10.20.0.11 10.20.0.12 fd00::11"}


def _run(
    cfg: Path, env: dict[str, str], *args: str, cwd: Path | None = None, path_prefix: Path | None = None
) -> subprocess.CompletedProcess[str]:
    path = os.environ.get("PATH", "/usr/bin:/bin")
    if path_prefix is not None:
        path = f"{path_prefix}:{path}"
    return subprocess.run(
        ["/bin/sh", str(SCRIPT), str(cfg), *args],
        env={"PATH": path, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def _changed_lines(original: str, rendered: str) -> dict[int, tuple[str, str]]:
    before = original.splitlines()
    after = rendered.splitlines()
    assert len(after) - HEADER_LINES == len(before)
    return {n: (a, b) for n, (a, b) in enumerate(zip(before, after[HEADER_LINES:], strict=True), 1) if a != b}


def test_edge_cfg_changes_only_its_site_lines() -> None:
    result = _run(EDGE_CFG, EDGE_ENV, "--print")
    assert result.returncode == 0, result.stderr
    original = EDGE_CFG.read_text(encoding="utf-8")
    changed = _changed_lines(original, result.stdout)
    site_lines = {n for n, line in enumerate(original.splitlines(), 1) if "# SITE" in line and not line.startswith("#")}
    # socket, and the db_url of dialog, dispatcher and permissions (the trusted carriers' address table)
    assert set(changed) == site_lines and len(site_lines) == 4
    for before, after in changed.values():
        assert "# SITE (rendered)" in after and "# SITE" in before
    assert "socket=udp:10.20.0.11:5060   # SITE (rendered)" in result.stdout
    # sed's special characters (&, |, \) in a password survive literally.
    assert result.stdout.count('"db_url", "postgres://opensips:s3cr&t|x\\y@pg.bank/avc")') == 3
    assert "CHANGE_ME" not in result.stdout


def test_rendered_config_logs_to_stderr_because_a_container_has_no_syslog() -> None:
    result = _run(EDGE_CFG, EDGE_ENV, "--print")
    header = result.stdout.splitlines()[:HEADER_LINES]
    assert "stderror_enabled=yes" in header and "syslog_enabled=no" in header


def test_ai_node_accepts_sip_from_every_listed_edge_address() -> None:
    result = _run(AI_NODE_CFG, AI_NODE_ENV, "--print")
    assert result.returncode == 0, result.stderr
    changed = _changed_lines(AI_NODE_CFG.read_text(encoding="utf-8"), result.stdout)
    assert len(changed) == 2
    assert 'if ($si == "10.20.0.11" || $si == "10.20.0.12" || $si == "fd00::11")   # SITE (rendered)' in result.stdout
    assert "socket=udp:10.20.0.21:5070   # SITE (rendered)" in result.stdout


@pytest.mark.parametrize(
    ("cfg", "env", "missing"),
    [
        (EDGE_CFG, {"OPENSIPS_SOCKET": "udp:10.0.0.1:5060"}, "OPENSIPS_DB_URL"),
        (EDGE_CFG, {"OPENSIPS_DB_URL": "postgres://a:b@c/d"}, "OPENSIPS_SOCKET"),
        (AI_NODE_CFG, {"OPENSIPS_SOCKET": "udp:10.0.0.2:5070"}, "OPENSIPS_EDGE_IPS"),
    ],
)
def test_a_missing_setting_stops_the_start_with_its_name(cfg: Path, env: dict[str, str], missing: str) -> None:
    result = _run(cfg, env, "--print")
    assert result.returncode == 2
    assert missing in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("cfg", "env"),
    [
        (EDGE_CFG, {**EDGE_ENV, "OPENSIPS_DB_URL": 'postgres://a:b@c/d"); exit; ("'}),
        (EDGE_CFG, {**EDGE_ENV, "OPENSIPS_DB_URL": "mysql://a:b@c/d"}),
        (EDGE_CFG, {**EDGE_ENV, "OPENSIPS_SOCKET": "10.0.0.1:5060"}),
        (AI_NODE_CFG, {**AI_NODE_ENV, "OPENSIPS_EDGE_IPS": '10.0.0.1") || (1'}),
        (AI_NODE_CFG, {**AI_NODE_ENV, "OPENSIPS_EDGE_IPS": "edge.bank.example"}),
    ],
    ids=["quote-in-db-url", "not-postgres", "socket-without-proto", "script-in-ip", "hostname-as-ip"],
)
def test_values_that_could_inject_script_are_refused(cfg: Path, env: dict[str, str]) -> None:
    result = _run(cfg, env, "--print")
    assert result.returncode == 2
    assert result.stderr.startswith("render-cfg: ")
    assert result.stdout == ""


def test_an_address_list_is_never_expanded_as_a_file_glob(tmp_path: Path) -> None:
    # "abc" is valid hex: had '*' been expanded to the file names here, it would pass as an address.
    (tmp_path / "abc").write_text("", encoding="utf-8")
    result = _run(AI_NODE_CFG, {**AI_NODE_ENV, "OPENSIPS_EDGE_IPS": "*"}, "--print", cwd=tmp_path)
    assert result.returncode == 2
    assert "'*'" in result.stderr


def test_an_unknown_site_line_fails_instead_of_running_with_lab_values(tmp_path: Path) -> None:
    cfg = tmp_path / "new.cfg"
    cfg.write_text(
        AI_NODE_CFG.read_text(encoding="utf-8")
        + 'modparam("mi_datagram", "socket_name", "udp:127.0.0.1:8080")  # SITE\n',
        encoding="utf-8",
    )
    result = _run(cfg, AI_NODE_ENV, "--print")
    assert result.returncode == 2
    assert "cannot render" in result.stderr and "mi_datagram" in result.stderr


def test_start_checks_the_rendered_file_then_execs_opensips_in_the_foreground(tmp_path: Path) -> None:
    # A stand-in for the opensips binary (not available here) that records how it was called.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    fake = bin_dir / "opensips"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n', encoding="utf-8")
    fake.chmod(0o755)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = _run(EDGE_CFG, {**EDGE_ENV, "OPENSIPS_RENDER_DIR": str(run_dir)}, path_prefix=bin_dir)
    assert result.returncode == 0, result.stderr
    rendered = run_dir / "edge.cfg"
    assert calls.read_text(encoding="utf-8").splitlines() == [f"-C -f {rendered}", f"-F -f {rendered}"]
    # The rendered file carries the database password: owner-only.
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    assert "s3cr&t" in rendered.read_text(encoding="utf-8")


def test_a_config_check_failure_stops_the_start(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "opensips"
    fake.write_text('#!/bin/sh\n[ "$1" = "-C" ] && exit 255\nexit 0\n', encoding="utf-8")
    fake.chmod(0o755)
    result = _run(AI_NODE_CFG, {**AI_NODE_ENV, "OPENSIPS_RENDER_DIR": str(tmp_path)}, path_prefix=bin_dir)
    assert result.returncode == 2
    assert "opensips -C rejected" in result.stderr

"""deploy/k8s/sync_opensips_configmap.py: the committed opensips-cfg ConfigMap carries opensips/*.cfg verbatim."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.support import DEPLOY, REPO_ROOT, load_script, load_yaml, load_yaml_text

sync = load_script(DEPLOY / "k8s" / "sync_opensips_configmap.py")


def test_committed_configmap_is_what_the_script_generates_from_opensips() -> None:
    assert sync.main(["--check"]) == 0, "run: python deploy/k8s/sync_opensips_configmap.py"


def test_configmap_data_equals_the_config_files_byte_for_byte() -> None:
    data = load_yaml(DEPLOY / "k8s" / "opensips-configmap.yaml")["data"]
    assert set(data) == set(sync.CONFIGS)
    for name in sync.CONFIGS:
        assert data[name] == (REPO_ROOT / "opensips" / name).read_text(encoding="utf-8"), name


@pytest.mark.parametrize(
    "text",
    [
        "route {\n\texit;\n}\n",
        "no newline at the end",
        "two blank lines at the end\n\n\n",
        '# comment: with colon\n\n\tmodparam("a", "b", 1)  # SITE\n',
        "",
    ],
)
def test_literal_block_round_trips_through_a_yaml_parser(text: str) -> None:
    document = "data:\n" + sync.literal_block("file.cfg", text)
    assert load_yaml_text(document)["data"]["file.cfg"] == text


@pytest.mark.parametrize("text", ["trailing space \nx\n", "  indented first line\n", "crlf\r\n"])
def test_literal_block_refuses_text_yaml_would_not_keep(text: str) -> None:
    with pytest.raises(sync.SyncError):
        sync.literal_block("file.cfg", text)


def test_render_reads_every_config_from_the_given_folder(tmp_path: Path) -> None:
    for name in sync.CONFIGS:
        (tmp_path / name).write_text(f"# {name}\n", encoding="utf-8")
    data = load_yaml_text(sync.render(tmp_path))["data"]
    assert data == {name: f"# {name}\n" for name in sync.CONFIGS}

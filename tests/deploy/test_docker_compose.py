"""deploy/docker-compose.yml: services, pinned images, mounts that exist, and addresses that agree.

Compose cannot run here, so the file is read as data and every value that must agree with another file
is compared with it: the OpenSIPS configs (MI and HTTP ports), the connector's settings (loaded with
avc's own loader), the dispatcher row, the drain timeout and the stop grace period.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from avc.config import load_settings
from tests.deploy.support import DEPLOY, REPO_ROOT, load_yaml, unknown_avc_variables

COMPOSE_FILE = DEPLOY / "docker-compose.yml"
COMPOSE = load_yaml(COMPOSE_FILE)
SERVICES: dict[str, Any] = COMPOSE["services"]
REQUIRED = {"edge", "ai-node", "avc", "postgres", "redis", "prometheus", "grafana", "migrate"}
# Host folders that exist only after a setup step, never in a fresh checkout.
GENERATED = {REPO_ROOT / ".models": "python -m engines.models"}
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")
_REQUIRED_VAR = re.compile(r"\$\{(\w+)(:?\?[^}]*)?\}")


def substitute(value: str) -> str:
    """A compose value with its `${VAR:-default}` references replaced by the defaults."""
    assert not _REQUIRED_VAR.search(_DEFAULTED.sub("", value)), f"{value!r} needs a variable without a default"
    return _DEFAULTED.sub(lambda m: m[2], value)


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: use the mapping form of environment"
    return {key: substitute(str(value)) for key, value in env.items()}


def address(service: str) -> str:
    return str(SERVICES[service]["networks"]["voice"]["ipv4_address"])


def cfg_text(name: str) -> str:
    return (REPO_ROOT / "opensips" / name).read_text(encoding="utf-8")


def test_the_whole_voice_line_is_there() -> None:
    assert set(SERVICES) >= REQUIRED
    assert COMPOSE["name"] == "avc"


def test_images_are_pinned_or_built_from_files_in_the_repo() -> None:
    for name, service in SERVICES.items():
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            dockerfile = context / service["build"].get("dockerfile", "Dockerfile")
            assert context.is_dir() and dockerfile.is_file(), name
            assert ":" in service["image"], f"{name}: name the built image with a tag"
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag != "latest" and re.search(r"\d", tag), f"{name}: {image}"


def test_bind_mounts_refer_to_files_that_exist() -> None:
    named = set(COMPOSE.get("volumes") or {})
    mounts = 0
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = substitute(volume).split(":")[0]
            if not source.startswith("."):
                assert source in named, f"{name}: named volume {source} is not declared"
                continue
            path = (DEPLOY / source).resolve()
            mounts += 1
            if path in GENERATED:
                continue
            assert path.exists(), f"{name}: {source} does not exist"
    assert mounts >= 10


def test_opensips_services_run_the_committed_configs() -> None:
    for service, cfg in (("edge", "edge.cfg"), ("ai-node", "ai-node.cfg")):
        [command] = SERVICES[service]["command"]
        assert f"../opensips/{cfg}:{command}:ro" in SERVICES[service]["volumes"]


@pytest.mark.parametrize("service", ["edge", "ai-node"])
def test_opensips_config_renders_with_the_compose_settings(service: str) -> None:
    [command] = SERVICES[service]["command"]
    cfg = REPO_ROOT / "opensips" / Path(command).name
    result = subprocess.run(
        ["/bin/sh", str(DEPLOY / "opensips" / "render-cfg.sh"), str(cfg), "--print"],
        env={"PATH": "/usr/bin:/bin", **environment(service)},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"socket={environment(service)['OPENSIPS_SOCKET']}" in result.stdout


def test_sip_addresses_agree_between_edge_ai_node_and_the_dispatcher_row() -> None:
    edge, ai_node = address("edge"), address("ai-node")
    assert environment("edge")["OPENSIPS_SOCKET"] == f"udp:{edge}:5060"
    assert environment("ai-node")["OPENSIPS_SOCKET"] == f"udp:{ai_node}:5070"
    assert environment("ai-node")["OPENSIPS_EDGE_IPS"] == edge
    lab_row = (DEPLOY / "postgres" / "dispatcher-lab.sql").read_text(encoding="utf-8")
    assert lab_row.count(f"'sip:{ai_node}:5070'") == 2


def test_addresses_are_unique_and_inside_the_voice_subnet() -> None:
    [pool] = COMPOSE["networks"]["voice"]["ipam"]["config"]
    subnet = ipaddress.ip_network(pool["subnet"])
    addresses = [address(name) for name, s in SERVICES.items() if "networks" in s and isinstance(s["networks"], dict)]
    assert len(addresses) == len(set(addresses))
    assert all(ipaddress.ip_address(a) in subnet for a in addresses)
    assert ipaddress.ip_address(pool["gateway"]) in subnet


def test_avc_shares_the_ai_node_network_namespace_and_reaches_its_loopback_sockets() -> None:
    avc = SERVICES["avc"]
    assert avc["network_mode"] == "service:ai-node"
    assert "ports" not in avc and "networks" not in avc
    settings = load_settings(environment("avc"), dotenv=None)
    mi_socket = re.search(r'modparam\("mi_datagram", "socket_name", "([^"]+)"\)', cfg_text("ai-node.cfg"))
    assert mi_socket is not None and settings.mi_url == mi_socket[1]
    assert settings.event_host == "127.0.0.1"
    assert settings.rtp_bind_ip == address("ai-node") == settings.http_host
    assert settings.mode == "echo"


def test_compose_sets_only_known_avc_variables() -> None:
    for service in ("avc", "migrate"):
        assert unknown_avc_variables(environment(service)) == set(), service


def test_avc_stop_grace_period_outlasts_its_drain() -> None:
    settings = load_settings(environment("avc"), dotenv=None)
    grace = re.fullmatch(r"(\d+)s", SERVICES["avc"]["stop_grace_period"])
    assert grace is not None
    assert int(grace[1]) > settings.drain_timeout


def test_opensips_health_checks_call_the_mi_http_port_of_their_config() -> None:
    for service, cfg in (("edge", "edge.cfg"), ("ai-node", "ai-node.cfg")):
        port = re.search(r'modparam\("httpd", "port", (\d+)\)', cfg_text(cfg))
        assert port is not None
        test = SERVICES[service]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[-1] == f"http://127.0.0.1:{port[1]}/mi"
        assert "Content-Type: application/json" in test  # mi_http answers nothing else


def test_start_order_waits_for_migrations_and_healthy_dependencies() -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in SERVICES.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            assert rule["condition"] in conditions
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{dependency} has no healthcheck"
    assert SERVICES["avc"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert SERVICES["edge"]["depends_on"]["dispatcher-seed"]["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["command"][:3] == ["python", "-m", "banking.migrate"]


def test_only_the_observability_uis_are_published_and_only_on_loopback() -> None:
    published = {name: s["ports"] for name, s in SERVICES.items() if "ports" in s}
    assert set(published) == {"prometheus", "grafana"}
    for ports in published.values():
        assert all(str(port).startswith("127.0.0.1:") for port in ports)


def test_migrations_and_avc_share_one_database_url() -> None:
    assert environment("migrate")["AVC_PG_DSN"] == environment("avc")["AVC_PG_DSN"]
    password = environment("postgres")["POSTGRES_PASSWORD"]
    assert f":{password}@postgres" in environment("edge")["OPENSIPS_DB_URL"]
    assert "lab-only" in password, "the lab password must say it is one"

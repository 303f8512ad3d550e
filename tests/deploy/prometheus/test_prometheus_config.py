"""deploy/prometheus/prometheus.yml (compose) and prometheus-k8s.yml (Kubernetes): scrape what avc serves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import DEPLOY, load_yaml, load_yaml_documents

PROMETHEUS = DEPLOY / "prometheus"
COMPOSE = DEPLOY / "docker-compose.yml"
AI_NODE = DEPLOY / "k8s" / "ai-node.yaml"
CONFIGS = [PROMETHEUS / "prometheus.yml", PROMETHEUS / "prometheus-k8s.yml"]
TOP_LEVEL = {"global", "rule_files", "scrape_configs", "alerting", "remote_write"}
GLOBAL_KEYS = {"scrape_interval", "scrape_timeout", "evaluation_interval", "external_labels"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)([smh])", duration))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_has_known_keys_valid_durations_and_unique_jobs(path: Path) -> None:
    config = load_yaml(path)
    assert set(config) <= TOP_LEVEL
    assert set(config["global"]) <= GLOBAL_KEYS
    for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
        assert DURATION.match(config["global"][key]), key
    assert _seconds(config["global"]["scrape_timeout"]) <= _seconds(config["global"]["scrape_interval"])
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert len(jobs) == len(set(jobs)) and "avc" in jobs


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_rule_files_point_where_the_rules_are_mounted(path: Path) -> None:
    config = load_yaml(path)
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    prometheus = load_yaml(COMPOSE)["services"]["prometheus"]
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in prometheus["volumes"]
    assert sorted(p.name for p in (PROMETHEUS / "rules").glob("*.yml")) == ["avc.rules.yml"]


def test_compose_prometheus_scrapes_avc_where_compose_runs_it() -> None:
    [job] = [j for j in load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"] if j["job_name"] == "avc"]
    [target] = job["static_configs"][0]["targets"]
    host, _, port = target.partition(":")
    services = load_yaml(COMPOSE)["services"]
    # avc lives in ai-node's network namespace, so its port is reached through the ai-node service name.
    assert services["avc"]["network_mode"] == f"service:{host}"
    assert services["avc"]["environment"]["AVC_HTTP_PORT"] == port
    assert job.get("metrics_path", "/metrics") == "/metrics"


def _ai_node_pod() -> dict[str, Any]:
    deployment = next(d for d in load_yaml_documents(AI_NODE) if d["kind"] == "Deployment")
    template: dict[str, Any] = deployment["spec"]["template"]
    return template


def test_k8s_scrape_keeps_the_annotated_pods_ops_port_and_labels_them_for_the_adapter() -> None:
    [job] = load_yaml(PROMETHEUS / "prometheus-k8s.yml")["scrape_configs"]
    relabel = job["relabel_configs"]
    keeps = {tuple(r["source_labels"]): r["regex"] for r in relabel if r.get("action") == "keep"}
    pod = _ai_node_pod()
    scrape_annotation = keeps[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == scrape_annotation
    port_name = keeps[("__meta_kubernetes_pod_container_port_name",)]
    avc = next(c for c in pod["spec"]["containers"] if c["name"] == "avc")
    assert port_name in {p["name"] for p in avc["ports"]}
    targets = {r.get("target_label") for r in relabel}
    assert {"namespace", "pod"} <= targets
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["avc"]

"""deploy/grafana: the provisioned datasource, the dashboard provider and the avc dashboard's queries."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.support import DEPLOY, exported_series, load_json, load_yaml, promql_problems

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "avc.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "avc.yml"
COMPOSE = DEPLOY / "docker-compose.yml"


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


DASH = load_json(DASHBOARD)
PANELS = list(_panels(DASH["panels"]))
QUERY_PANELS = [p for p in PANELS if p["type"] != "row"]
TARGETS = [(p["title"], t) for p in QUERY_PANELS for t in p["targets"]]


def test_datasource_provisioning_is_valid_and_points_at_compose_prometheus() -> None:
    config = load_yaml(DATASOURCES)
    assert config["apiVersion"] == 1
    [source] = config["datasources"]
    assert {"name", "type", "uid", "url", "access"} <= set(source)
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in load_yaml(COMPOSE)["services"]


def test_dashboard_provider_loads_the_folder_compose_mounts() -> None:
    config = load_yaml(PROVIDERS)
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file"
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]


def test_dashboard_has_identity_and_unique_panel_ids() -> None:
    assert DASH["uid"] and DASH["title"] and isinstance(DASH["schemaVersion"], int)
    ids = [panel["id"] for panel in PANELS]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) for i in ids)


def test_every_panel_fits_the_24_column_grid_without_overlap() -> None:
    occupied: set[tuple[int, int]] = set()
    for panel in PANELS:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells


def test_every_panel_queries_the_provisioned_datasource() -> None:
    uid = load_yaml(DATASOURCES)["datasources"][0]["uid"]
    for panel in QUERY_PANELS:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


@pytest.mark.parametrize(("title", "target"), TARGETS, ids=[f"{t}-{q['refId']}" for t, q in TARGETS])
def test_panel_query_uses_only_exported_metrics_and_labels(title: str, target: dict[str, Any]) -> None:
    assert promql_problems(target["expr"]) == []


def test_template_variable_queries_an_exported_metric_and_label() -> None:
    [variable] = DASH["templating"]["list"]
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"])
    assert match is not None
    assert match[1] in exported_series() and match[2] == "instance"
    uses_variable = [t for _, t in TARGETS if "$instance" in t["expr"]]
    assert len(uses_variable) == len(TARGETS)


@pytest.mark.parametrize(
    "metric",
    [
        "avc_calls_active",
        "avc_calls_total",
        "avc_call_rejects_total",
        "avc_turn_stage_seconds_bucket",
        "avc_barge_ins_total",
        "avc_no_inputs_total",
        "avc_barge_in_stop_seconds_bucket",
        "avc_dtmf_digits_total",
        "avc_transfers_total",
        "avc_auth_outcomes_total",
        "avc_rtp_packets_sent_total",
        "avc_rtp_packets_received_total",
        "avc_rtp_packets_lost_total",
        "avc_rtp_packets_late_total",
        "avc_rtp_packets_rejected_source_total",
        "avc_media_tick_lateness_seconds_bucket",
        "avc_mi_errors_total",
        "avc_event_subscription_up",
        "avc_rtp_port_pool_free",
        "avc_writer_queue_depth",
        "avc_engine_errors_total",
        "avc_engine_fallbacks_total",
        "avc_ready",
    ],
)
def test_dashboard_shows_what_operations_asked_for(metric: str) -> None:
    assert any(re.search(rf"\b{metric}\b", target["expr"]) for _, target in TARGETS), metric


def test_voice_to_voice_panel_shows_p50_and_p95_of_the_right_stage() -> None:
    [panel] = [p for p in QUERY_PANELS if p["title"] == "Voice-to-voice"]
    exprs = [t["expr"] for t in panel["targets"]]
    assert all('stage="voice_to_voice"' in e for e in exprs)
    assert [e.split(",")[0] for e in exprs] == ["histogram_quantile(0.5", "histogram_quantile(0.95"]

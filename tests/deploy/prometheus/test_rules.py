"""deploy/prometheus/rules/avc.rules.yml: rule structure, and PromQL that only names what avc exports."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy.support import DEPLOY, exported_series, load_yaml, promql_problems, promql_uses

RULES_FILE = DEPLOY / "prometheus" / "rules" / "avc.rules.yml"
README = DEPLOY / "README.md"
RULE_KEYS = {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
ANNOTATIONS = {"summary", "description", "runbook", "runbook_url"}
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
TEMPLATE_LABEL = re.compile(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)")


def _rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES_FILE)["groups"] for rule in group["rules"]]


RULES = _rules()


def _rule(name: str) -> dict[str, Any]:
    [rule] = [r for r in RULES if r["alert"] == name]
    return rule


def test_groups_have_unique_names_and_hold_rules() -> None:
    groups = load_yaml(RULES_FILE)["groups"]
    assert set(load_yaml(RULES_FILE)) == {"groups"}
    names = [group["name"] for group in groups]
    assert len(names) == len(set(names))
    assert all(group["rules"] for group in groups)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: str(r.get("alert")))
def test_alert_has_for_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert set(rule) <= RULE_KEYS
    assert re.fullmatch(r"Avc[A-Z][A-Za-z0-9]+", rule["alert"])
    assert isinstance(rule["expr"], str) and rule["expr"].strip()
    assert DURATION.match(rule["for"])
    assert rule["labels"]["severity"] in SEVERITIES
    assert set(rule["annotations"]) == ANNOTATIONS
    assert all(isinstance(value, str) and value.strip() for value in rule["annotations"].values())


@pytest.mark.parametrize("rule", RULES, ids=lambda r: str(r.get("alert")))
def test_alert_expression_uses_only_exported_metrics_and_labels(rule: dict[str, Any]) -> None:
    assert promql_problems(rule["expr"]) == []


@pytest.mark.parametrize("rule", RULES, ids=lambda r: str(r.get("alert")))
def test_annotations_only_name_labels_the_expression_keeps(rule: dict[str, Any]) -> None:
    use = promql_uses(rule["expr"])
    kept: set[str]
    if use.grouping_labels:
        kept = set(use.grouping_labels - {"le"})
    else:
        known = exported_series()
        kept = {"instance", "job"} | {label for name in use.metrics for label in known.get(name, frozenset())}
    for text in rule["annotations"].values():
        assert text.count("{{") == text.count("}}")
        for label in TEMPLATE_LABEL.findall(text):
            assert label in kept, f"{rule['alert']}: $labels.{label} is aggregated away by the expression"


def test_alert_names_are_unique_and_every_runbook_anchor_exists_in_the_readme() -> None:
    names = [rule["alert"] for rule in RULES]
    assert len(names) == len(set(names))
    headings = {
        line[4:].strip().lower() for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("### ")
    }
    for rule in RULES:
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path == "deploy/README.md"
        assert anchor == rule["alert"].lower() and anchor in headings, rule["alert"]


@pytest.mark.parametrize(
    ("alert", "fragments", "duration"),
    [
        ("AvcVoiceToVoiceSlow", ['avc_turn_stage_seconds_bucket{stage="voice_to_voice"}', "0.95", "> 1.2"], None),
        ("AvcCallFailuresHigh", ["internal_error", "app_error", "answer_failed", "avc_calls_total"], None),
        ("AvcCallRejectsHigh", ["avc_call_rejects_total", 'avc_events_total{event_type="NEW"}'], None),
        ("AvcEventSubscriptionLost", ["avc_event_subscription_up == 0"], "30s"),
        ("AvcRtpPortPoolNearlyEmpty", ["avc_rtp_port_pool_free / avc_rtp_port_pool_size < 0.1"], None),
        ("AvcWriterBacklog", ["avc_writer_queue_depth > 100"], "1m"),
        ("AvcMiErrorsHigh", ["avc_mi_errors_total", "avc_mi_requests_total"], None),
        ("AvcRtpLossHigh", ["avc_rtp_packets_lost_total", "avc_rtp_packets_received_total"], None),
        ("AvcMediaTickLate", ["0.99", "avc_media_tick_lateness_seconds_bucket", "> 0.005"], None),
        ("AvcCallersNotHeard", ["avc_no_inputs_total", "avc_calls_total"], "15m"),
    ],
)
def test_the_alerts_operations_asked_for_are_there(alert: str, fragments: list[str], duration: str | None) -> None:
    rule = _rule(alert)
    expr = " ".join(rule["expr"].split())
    for fragment in fragments:
        assert fragment in expr, f"{alert}: {fragment!r} not in {expr!r}"
    if duration is not None:
        assert rule["for"] == duration


def test_subscription_loss_and_target_down_page_someone() -> None:
    assert _rule("AvcEventSubscriptionLost")["labels"]["severity"] == "critical"
    assert _rule("AvcTargetDown")["labels"]["severity"] == "critical"


# The checker itself must catch the mistakes it exists for, or every test above passes vacuously.
@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(avc_call_total[5m])", "unknown metric avc_call_total"),
        ('avc_turn_stage_seconds_bucket{stag="asr"}', "has no label stag"),
        ("sum by (outcome) (avc_calls_active)", "grouping by outcome"),
        ("rate(avc_calls_active[5m])", "not a counter"),
        ("histogram_quantile(0.9, sum(rate(avc_turn_stage_seconds_bucket[5m])))", "without `le`"),
        ("sum(rate(avc_calls_total[5m])", "unbalanced brackets"),
    ],
)
def test_promql_checker_reports_the_mistake(expr: str, problem: str) -> None:
    assert any(problem in found for found in promql_problems(expr)), promql_problems(expr)


def test_promql_checker_sees_through_functions_grouping_strings_and_ranges() -> None:
    use = promql_uses(
        'histogram_quantile(0.95, sum by (instance, le) (rate(avc_mi_latency_seconds_bucket{transport=~"udp|http"}'
        "[$__rate_interval]))) > 0.005 and on (instance) avc_ready == 1 offset 5m"
    )
    assert use.metrics == {"avc_mi_latency_seconds_bucket", "avc_ready"}
    assert use.grouping_labels == {"instance", "le"}
    assert use.matcher_labels == {"avc_mi_latency_seconds_bucket": {"transport"}}
    assert use.rate_arguments == ("avc_mi_latency_seconds_bucket",)

"""The Kubernetes manifests in deploy/k8s: schema per kind, then the references between objects.

No API server is available, so each object is validated against the hand-written schema of its kind
(tests/deploy/k8s_schemas.py) and the cross-object rules the API server cannot check for us are checked
here: Services and budgets select real pods, probes name real ports, every ConfigMap/Secret key a pod
reads exists, the AI-node pod holds OpenSIPS and avc, and the grace period outlasts avc's drain.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from avc.config import load_settings
from tests.deploy.k8s_schemas import SCHEMAS
from tests.deploy.support import DEPLOY, load_yaml, load_yaml_documents, load_yaml_text, unknown_avc_variables

K8S = DEPLOY / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
SECRET_TEMPLATE = K8S / "secrets.template.yaml"
NAMESPACE = "avc"


@dataclass(frozen=True)
class Manifest:
    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.path.relative_to(DEPLOY)}: {self.kind}/{self.name}"


def _load_all() -> list[Manifest]:
    manifests: list[Manifest] = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path == KUSTOMIZATION:
            continue
        manifests.extend(Manifest(path, doc) for doc in load_yaml_documents(path))
    return manifests


MANIFESTS = _load_all()


def _of_kind(kind: str) -> list[Manifest]:
    return [m for m in MANIFESTS if m.kind == kind]


def _one(kind: str, name: str) -> Manifest:
    found = [m for m in MANIFESTS if m.kind == kind and m.name == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _pod_spec(deployment: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = deployment.doc["spec"]["template"]["spec"]
    return spec


def _all_containers(deployment: Manifest) -> Iterator[dict[str, Any]]:
    spec = _pod_spec(deployment)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _selected_deployments(selector: dict[str, str]) -> list[Manifest]:
    return [d for d in _of_kind("Deployment") if _selects(selector, d.doc["spec"]["template"]["metadata"]["labels"])]


def _config_data(kind: str, name: str) -> dict[str, str]:
    doc = _one(kind, name).doc
    data: dict[str, str] = doc.get("data") or doc.get("stringData") or {}
    return data


def _validation_errors(doc: dict[str, Any]) -> list[str]:
    schema = SCHEMAS[(doc["apiVersion"], doc["kind"])]
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]


def _ai_node_deployment() -> dict[str, Any]:
    doc: dict[str, Any] = _one("Deployment", "ai-node").doc
    return doc


# ---------------------------------------------------------------- schemas


def test_the_schemas_themselves_are_valid_draft_2020_12() -> None:
    for schema in SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_manifest_is_a_kind_with_a_schema() -> None:
    kinds = {(m.doc.get("apiVersion"), m.doc.get("kind")) for m in MANIFESTS}
    assert kinds <= SCHEMAS.keys(), f"no schema for {kinds - SCHEMAS.keys()}"
    assert {kind for _, kind in kinds} >= {"Deployment", "Service", "ConfigMap", "Secret", "Namespace"}


@pytest.mark.parametrize("manifest", MANIFESTS, ids=str)
def test_manifest_matches_the_schema_of_its_kind(manifest: Manifest) -> None:
    assert _validation_errors(manifest.doc) == []


def test_schema_rejects_a_misspelled_probe_field() -> None:
    broken = copy.deepcopy(_ai_node_deployment())
    avc = _container(broken, "avc")
    avc["readinesProbe"] = avc.pop("readinessProbe")
    assert any("readinesProbe" in error for error in _validation_errors(broken))


def test_schema_rejects_a_number_as_env_value_and_a_probe_with_two_handlers() -> None:
    broken = copy.deepcopy(_ai_node_deployment())
    avc = _container(broken, "avc")
    avc["env"].append({"name": "AVC_EVENT_PORT", "value": 9999})
    avc["livenessProbe"]["tcpSocket"] = {"port": "http-ops"}
    errors = _validation_errors(broken)
    assert any("9999 is not of type 'string'" in error for error in errors)
    assert any("livenessProbe" in error for error in errors)


def test_schema_rejects_a_container_without_resources() -> None:
    broken = copy.deepcopy(_ai_node_deployment())
    del _container(broken, "opensips")["resources"]
    assert any("'resources' is a required property" in error for error in _validation_errors(broken))


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        if container["name"] == name:
            found: dict[str, Any] = container
            return found
    raise AssertionError(f"no container {name}")


# ---------------------------------------------------------------- objects and names


def test_every_namespaced_object_lives_in_the_avc_namespace() -> None:
    for manifest in MANIFESTS:
        if manifest.kind == "Namespace" or manifest.path.parent != K8S:
            continue
        assert manifest.doc["metadata"].get("namespace") == NAMESPACE, str(manifest)
    assert [m.name for m in _of_kind("Namespace")] == [NAMESPACE]


def test_object_names_are_unique_per_kind() -> None:
    seen = [(m.kind, m.name) for m in MANIFESTS]
    assert len(seen) == len(set(seen))


def test_kustomization_applies_every_manifest_file_except_the_secret_template_and_addons() -> None:
    kustomization = load_yaml(KUSTOMIZATION)
    assert kustomization["namespace"] == NAMESPACE
    listed = set(kustomization["resources"])
    expected = {p.name for p in K8S.glob("*.yaml") if p not in (KUSTOMIZATION, SECRET_TEMPLATE)}
    assert listed == expected
    assert kustomization["resources"][0] == "namespace.yaml"


def test_deployment_selectors_match_their_own_pod_labels() -> None:
    for deployment in _of_kind("Deployment"):
        selector = deployment.doc["spec"]["selector"]["matchLabels"]
        assert _selects(selector, deployment.doc["spec"]["template"]["metadata"]["labels"]), str(deployment)


def test_images_are_pinned_to_a_version_never_latest() -> None:
    for deployment in _of_kind("Deployment"):
        for container in _all_containers(deployment):
            image = container["image"]
            name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
            assert name and tag and "/" not in tag and tag != "latest", f"{deployment}: {image}"


# ---------------------------------------------------------------- cross references


def test_every_service_selects_a_deployment_and_targets_ports_its_pods_declare() -> None:
    for service in _of_kind("Service"):
        selected = _selected_deployments(service.doc["spec"]["selector"])
        assert selected, f"{service} selects no Deployment's pods"
        for deployment in selected:
            declared = [
                (port.get("name"), port["containerPort"], port.get("protocol", "TCP"))
                for container in _pod_spec(deployment)["containers"]
                for port in container.get("ports", [])
            ]
            for port in service.doc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                protocol = port.get("protocol", "TCP")
                assert any(target in (name, number) and proto == protocol for name, number, proto in declared), (
                    f"{service}: port {target}/{protocol} is not declared by {deployment}"
                )


def test_every_probe_port_is_declared_by_its_container() -> None:
    probes_seen = 0
    for deployment in _of_kind("Deployment"):
        for container in _all_containers(deployment):
            ports = {p.get("name") for p in container.get("ports", [])} | {
                p["containerPort"] for p in container.get("ports", [])
            }
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if probe is None:
                    continue
                probes_seen += 1
                handler = probe.get("httpGet") or probe.get("tcpSocket")
                if handler is not None:
                    assert handler["port"] in ports, f"{deployment} {container['name']} {kind}: {handler['port']}"
    assert probes_seen >= 7


def test_every_long_running_container_has_readiness_and_liveness_probes() -> None:
    for deployment in _of_kind("Deployment"):
        for container in _pod_spec(deployment)["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, f"{deployment} {container['name']}"


def test_avc_probes_use_healthz_for_liveness_and_readyz_for_readiness() -> None:
    avc = _container(_ai_node_deployment(), "avc")
    assert avc["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert avc["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert avc["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_hpa_and_pdbs_target_existing_deployments() -> None:
    for hpa in _of_kind("HorizontalPodAutoscaler"):
        ref = hpa.doc["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["apiVersion"] == "apps/v1"
        _one("Deployment", ref["name"])
        assert hpa.doc["spec"]["minReplicas"] <= hpa.doc["spec"]["maxReplicas"]
    budgets = _of_kind("PodDisruptionBudget")
    assert {b.name for b in budgets} == {"edge", "ai-node"}
    for budget in budgets:
        assert len(_selected_deployments(budget.doc["spec"]["selector"]["matchLabels"])) == 1, str(budget)


def test_hpa_scales_ai_nodes_on_the_active_calls_pods_metric_the_adapter_serves() -> None:
    hpa = _one("HorizontalPodAutoscaler", "ai-node").doc["spec"]
    assert hpa["scaleTargetRef"]["name"] == "ai-node"
    [metric] = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "avc_calls_active"
    target = float(metric["pods"]["target"]["averageValue"])
    max_calls = load_settings(_config_data("ConfigMap", "avc-env"), dotenv=None).max_calls
    assert 0 < target < max_calls, "the per-pod target must leave headroom below AVC_MAX_CALLS"

    adapter = load_yaml_text(_one("ConfigMap", "prometheus-adapter").doc["data"]["config.yaml"])
    [rule] = adapter["rules"]
    assert rule["name"]["as"] == "avc_calls_active"
    assert rule["seriesQuery"].startswith("avc_calls_active{")
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}


def test_every_configmap_and_secret_reference_exists_with_its_key() -> None:
    references = 0
    for deployment in _of_kind("Deployment"):
        spec = _pod_spec(deployment)
        for container in _all_containers(deployment):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    _one("ConfigMap", source["configMapRef"]["name"])
                else:
                    _one("Secret", source["secretRef"]["name"])
                references += 1
            for var in container.get("env", []):
                value_from = var.get("valueFrom", {})
                for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if field in value_from:
                        ref = value_from[field]
                        assert ref["key"] in _config_data(kind, ref["name"]), f"{deployment}: {kind}/{ref}"
                        references += 1
        mounted = {m["name"] for c in _all_containers(deployment) for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert mounted <= volumes.keys(), f"{deployment} mounts undeclared volumes {mounted - volumes.keys()}"
        for volume in volumes.values():
            if "configMap" in volume:
                data = _config_data("ConfigMap", volume["configMap"]["name"])
                for item in volume["configMap"].get("items", []):
                    assert item["key"] in data, f"{deployment}: volume {volume['name']} key {item['key']}"
                references += 1
    assert references >= 8


def test_env_variable_references_are_defined_earlier_in_the_same_container() -> None:
    for deployment in _of_kind("Deployment"):
        for container in _all_containers(deployment):
            defined: set[str] = set()
            for var in container.get("env", []):
                for ref in re.findall(r"\$\((\w+)\)", var.get("value", "")):
                    assert ref in defined, f"{deployment} {container['name']}: $({ref}) used before it is defined"
                defined.add(var["name"])


def test_the_pods_run_the_opensips_configs_the_configmap_carries() -> None:
    for deployment, cfg in ((_one("Deployment", "edge"), "edge.cfg"), (_one("Deployment", "ai-node"), "ai-node.cfg")):
        spec = _pod_spec(deployment)
        opensips = next(c for c in spec["containers"] if c["name"] == "opensips")
        [mount] = [m for m in opensips["volumeMounts"] if m["name"] == "opensips-cfg"]
        assert opensips["args"] == [f"{mount['mountPath']}/{cfg}"]
        volume = next(v for v in spec["volumes"] if v["name"] == "opensips-cfg")
        assert cfg in {item["path"] for item in volume["configMap"]["items"]}


# ---------------------------------------------------------------- the AI node pod


def test_ai_node_pod_holds_opensips_and_avc_in_one_network_namespace() -> None:
    spec = _ai_node_deployment()["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["opensips", "avc"]
    env = {v["name"]: v.get("value") for v in _container(_ai_node_deployment(), "avc")["env"]}
    data = _config_data("ConfigMap", "avc-env")
    # MI and the event sink are the loopback sockets of ai-node.cfg, reachable only inside the pod.
    assert data["AVC_MI_URL"] == "udp:127.0.0.1:8080"
    assert data["AVC_EVENT_HOST"] == "127.0.0.1"
    assert env["AVC_RTP_BIND_IP"] == "$(POD_IP)"
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_termination_grace_period_outlasts_the_drain_and_opensips_waits_for_avc() -> None:
    drain = load_settings(_config_data("ConfigMap", "avc-env"), dotenv=None).drain_timeout
    spec = _ai_node_deployment()["spec"]["template"]["spec"]
    assert drain == 300.0
    assert spec["terminationGracePeriodSeconds"] > drain
    opensips = _container(_ai_node_deployment(), "opensips")
    command = " ".join(opensips["lifecycle"]["preStop"]["exec"]["command"])
    http_port = int(_config_data("ConfigMap", "avc-env")["AVC_HTTP_PORT"])
    assert f"/dev/tcp/${{POD_IP}}/{http_port}" in command
    assert "POD_IP" in {v["name"] for v in opensips["env"]}


def test_one_ai_node_and_one_edge_per_node_because_of_host_network() -> None:
    for name in ("edge", "ai-node"):
        spec = _pod_spec(_one("Deployment", name))
        assert spec["hostNetwork"] is True
        [term] = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert _selects(
            term["labelSelector"]["matchLabels"], _one("Deployment", name).doc["spec"]["template"]["metadata"]["labels"]
        )


def test_avc_env_configmap_holds_only_real_settings_and_loads() -> None:
    data = _config_data("ConfigMap", "avc-env")
    assert unknown_avc_variables(data) == set(), "unknown AVC_* keys (avc silently ignores a typo)"
    settings = load_settings(data, dotenv=None)
    assert settings.rtp_port_min <= settings.rtp_port_max
    assert (settings.rtp_port_max - settings.rtp_port_min + 1) // 2 >= settings.max_calls


def test_every_avc_variable_a_container_sets_is_a_known_setting() -> None:
    for deployment in _of_kind("Deployment"):
        for container in _all_containers(deployment):
            names = [var["name"] for var in container.get("env", [])]
            assert unknown_avc_variables(names) == set(), f"{deployment} {container['name']}"


def test_avc_pod_settings_load_with_the_downward_api_values_filled_in() -> None:
    avc = _container(_ai_node_deployment(), "avc")
    environ = dict(_config_data("ConfigMap", "avc-env"))
    for var in avc["env"]:
        if "value" in var:
            environ[var["name"]] = var["value"].replace("$(POD_IP)", "10.20.0.21").replace("$(POD_NAME)", "ai-node-x")
        else:
            environ[var["name"]] = "from-the-cluster"
    settings = load_settings(environ, dotenv=None)
    assert settings.rtp_bind_ip == "10.20.0.21"
    assert settings.http_host == "10.20.0.21"
    assert settings.node_id == "ai-node-x"


def test_every_container_runs_as_non_root_without_privilege_escalation() -> None:
    for deployment in _of_kind("Deployment"):
        spec = _pod_spec(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True, str(deployment)
        for container in _all_containers(deployment):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context.get("runAsUser", spec["securityContext"].get("runAsUser", 0)) != 0


def test_secret_template_holds_placeholders_only() -> None:
    secrets = _of_kind("Secret")
    assert {s.name for s in secrets} == {"avc-secrets", "opensips-secrets"}
    assert all(s.path == SECRET_TEMPLATE for s in secrets)
    for secret in secrets:
        assert "data" not in secret.doc, "base64 data could hide a real value"
        for key, value in secret.doc["stringData"].items():
            assert "REPLACE_ME" in value, f"{secret} {key} must be a placeholder"
    assert "kubectl -n avc create secret generic" in SECRET_TEMPLATE.read_text(encoding="utf-8")

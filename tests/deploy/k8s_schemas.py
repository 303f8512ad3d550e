"""Compact JSON Schemas (draft 2020-12) for the Kubernetes kinds deploy/k8s uses.

The upstream OpenAPI schemas cannot be fetched by the test suite, so these are written by hand from the
Kubernetes API reference (v1.29+). They cover what the manifests use and reject the mistakes the API
server would reject or silently ignore: misspelled fields (every object that is fully described here is
closed with additionalProperties: false), a non-string env value, a probe with two handlers, a port name
longer than 15 characters, a container without resources (a project rule, stricter than Kubernetes).
Fields the manifests never use are simply not allowed; add them here, from the API reference, when a
manifest needs one.
"""

from __future__ import annotations

from typing import Any, Final

Schema = dict[str, Any]

_DNS_LABEL: Final[Schema] = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
_DNS_SUBDOMAIN: Final[Schema] = {
    "type": "string",
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    "maxLength": 253,
}
_LABEL_KEY: Final[Schema] = {"pattern": r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"}
_LABEL_VALUE: Final[Schema] = {"type": "string", "pattern": r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"}
_LABELS: Final[Schema] = {"type": "object", "propertyNames": _LABEL_KEY, "additionalProperties": _LABEL_VALUE}
_ANNOTATIONS: Final[Schema] = {
    "type": "object",
    "propertyNames": _LABEL_KEY,
    "additionalProperties": {"type": "string"},
}
_STRINGS: Final[Schema] = {"type": "array", "items": {"type": "string"}}
_NON_NEGATIVE: Final[Schema] = {"type": "integer", "minimum": 0}
_POSITIVE: Final[Schema] = {"type": "integer", "minimum": 1}
_BOOL: Final[Schema] = {"type": "boolean"}
_QUANTITY: Final[Schema] = {
    "anyOf": [
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"},
        {"type": "integer", "minimum": 0},
    ]
}
_PORT_NUMBER: Final[Schema] = {"type": "integer", "minimum": 1, "maximum": 65535}
# IANA_SVC_NAME: at most 15 characters, lowercase alphanumerics and '-', at least one letter.
_PORT_NAME: Final[Schema] = {
    "type": "string",
    "pattern": r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "maxLength": 15,
}
_PORT_REF: Final[Schema] = {"anyOf": [_PORT_NUMBER, _PORT_NAME]}
_PROTOCOL: Final[Schema] = {"enum": ["TCP", "UDP", "SCTP"]}
_ENV_NAME: Final[Schema] = {"type": "string", "pattern": r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"}
_PERCENT_OR_INT: Final[Schema] = {"anyOf": [_NON_NEGATIVE, {"type": "string", "pattern": r"^[0-9]+%$"}]}


def _closed(properties: Schema, required: tuple[str, ...] = ()) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


METADATA: Final = _closed(
    {"name": _DNS_SUBDOMAIN, "namespace": _DNS_LABEL, "labels": _LABELS, "annotations": _ANNOTATIONS},
    ("name",),
)
_TEMPLATE_METADATA: Final = _closed({"labels": _LABELS, "annotations": _ANNOTATIONS}, ("labels",))
_LABEL_SELECTOR: Final = _closed(
    {"matchLabels": {**_LABELS, "minProperties": 1}, "matchExpressions": {"type": "array"}}, ("matchLabels",)
)

_KEY_REF: Final = _closed({"name": _DNS_SUBDOMAIN, "key": {"type": "string"}, "optional": _BOOL}, ("name", "key"))
_ENV_VAR: Final = {
    **_closed(
        {
            "name": _ENV_NAME,
            # The API takes strings only; `value: 9999` is a classic rejection at apply time.
            "value": {"type": "string"},
            "valueFrom": {
                **_closed(
                    {
                        "fieldRef": _closed(
                            {"fieldPath": {"type": "string"}, "apiVersion": {"const": "v1"}}, ("fieldPath",)
                        ),
                        "configMapKeyRef": _KEY_REF,
                        "secretKeyRef": _KEY_REF,
                        "resourceFieldRef": {"type": "object"},
                    }
                ),
                "minProperties": 1,
                "maxProperties": 1,
            },
        },
        ("name",),
    ),
    "not": {"required": ["value", "valueFrom"]},
}
_ENV_FROM: Final = {
    **_closed(
        {
            "configMapRef": _closed({"name": _DNS_SUBDOMAIN, "optional": _BOOL}, ("name",)),
            "secretRef": _closed({"name": _DNS_SUBDOMAIN, "optional": _BOOL}, ("name",)),
            "prefix": {"type": "string"},
        }
    ),
    "oneOf": [{"required": ["configMapRef"]}, {"required": ["secretRef"]}],
}
_CONTAINER_PORT: Final = _closed(
    {"name": _PORT_NAME, "containerPort": _PORT_NUMBER, "protocol": _PROTOCOL, "hostPort": _PORT_NUMBER},
    ("containerPort",),
)
_RESOURCES: Final = _closed(
    {
        "requests": {"type": "object", "additionalProperties": _QUANTITY, "minProperties": 1},
        "limits": {"type": "object", "additionalProperties": _QUANTITY, "minProperties": 1},
    },
    ("requests",),
)
_HTTP_GET: Final = _closed(
    {
        "path": {"type": "string", "pattern": "^/"},
        "port": _PORT_REF,
        "host": {"type": "string"},
        "scheme": {"enum": ["HTTP", "HTTPS"]},
        "httpHeaders": {"type": "array"},
    },
    ("port",),
)
_EXEC: Final = _closed({"command": {**_STRINGS, "minItems": 1}}, ("command",))
_TCP_SOCKET: Final = _closed({"port": _PORT_REF, "host": {"type": "string"}}, ("port",))
_HANDLERS: Final = ("httpGet", "tcpSocket", "exec", "grpc")
PROBE: Final = {
    **_closed(
        {
            "httpGet": _HTTP_GET,
            "tcpSocket": _TCP_SOCKET,
            "exec": _EXEC,
            "grpc": _closed({"port": _PORT_NUMBER, "service": {"type": "string"}}, ("port",)),
            "initialDelaySeconds": _NON_NEGATIVE,
            "periodSeconds": _POSITIVE,
            "timeoutSeconds": _POSITIVE,
            "successThreshold": _POSITIVE,
            "failureThreshold": _POSITIVE,
            "terminationGracePeriodSeconds": _POSITIVE,
        }
    ),
    # Exactly one handler: the API rejects a probe with none or with two.
    "oneOf": [{"required": [handler]} for handler in _HANDLERS],
}
_LIFECYCLE_HANDLER: Final = {
    **_closed({"exec": _EXEC, "httpGet": _HTTP_GET, "tcpSocket": _TCP_SOCKET, "sleep": {"type": "object"}}),
    "minProperties": 1,
    "maxProperties": 1,
}
_CONTAINER_SECURITY: Final = _closed(
    {
        "runAsUser": _NON_NEGATIVE,
        "runAsGroup": _NON_NEGATIVE,
        "runAsNonRoot": _BOOL,
        "allowPrivilegeEscalation": _BOOL,
        "readOnlyRootFilesystem": _BOOL,
        "privileged": _BOOL,
        "capabilities": _closed({"add": _STRINGS, "drop": _STRINGS}),
        "seccompProfile": {"type": "object"},
    }
)
_VOLUME_MOUNT: Final = _closed(
    {
        "name": _DNS_LABEL,
        "mountPath": {"type": "string", "pattern": "^/"},
        "readOnly": _BOOL,
        "subPath": {"type": "string"},
    },
    ("name", "mountPath"),
)
CONTAINER: Final = _closed(
    {
        "name": _DNS_LABEL,
        "image": {"type": "string", "minLength": 1},
        "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        "command": _STRINGS,
        "args": _STRINGS,
        "workingDir": {"type": "string"},
        "env": {"type": "array", "items": _ENV_VAR},
        "envFrom": {"type": "array", "items": _ENV_FROM},
        "ports": {"type": "array", "items": _CONTAINER_PORT},
        "resources": _RESOURCES,
        "startupProbe": PROBE,
        "readinessProbe": PROBE,
        "livenessProbe": PROBE,
        "lifecycle": _closed({"preStop": _LIFECYCLE_HANDLER, "postStart": _LIFECYCLE_HANDLER}),
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": {"type": "array", "items": _VOLUME_MOUNT},
    },
    # resources: a project rule; the scheduler needs requests to place voice workloads sensibly.
    ("name", "image", "resources"),
)
_KEY_TO_PATH: Final = _closed(
    {"key": {"type": "string"}, "path": {"type": "string"}, "mode": _NON_NEGATIVE}, ("key", "path")
)
VOLUME: Final = {
    **_closed(
        {
            "name": _DNS_LABEL,
            "configMap": _closed(
                {
                    "name": _DNS_SUBDOMAIN,
                    "items": {"type": "array", "items": _KEY_TO_PATH},
                    "defaultMode": _NON_NEGATIVE,
                    "optional": _BOOL,
                },
                ("name",),
            ),
            "secret": _closed(
                {
                    "secretName": _DNS_SUBDOMAIN,
                    "items": {"type": "array", "items": _KEY_TO_PATH},
                    "defaultMode": _NON_NEGATIVE,
                    "optional": _BOOL,
                },
                ("secretName",),
            ),
            "emptyDir": _closed({"medium": {"enum": ["", "Memory"]}, "sizeLimit": _QUANTITY}),
            "persistentVolumeClaim": _closed({"claimName": _DNS_SUBDOMAIN, "readOnly": _BOOL}, ("claimName",)),
        },
        ("name",),
    ),
    "minProperties": 2,
    "maxProperties": 2,
}
POD_SPEC: Final = _closed(
    {
        "containers": {"type": "array", "items": CONTAINER, "minItems": 1},
        "initContainers": {"type": "array", "items": CONTAINER},
        "volumes": {"type": "array", "items": VOLUME},
        "hostNetwork": _BOOL,
        "dnsPolicy": {"enum": ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]},
        "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
        "tolerations": {
            "type": "array",
            "items": _closed(
                {
                    "key": {"type": "string"},
                    "operator": {"enum": ["Equal", "Exists"]},
                    "value": {"type": "string"},
                    "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
                    "tolerationSeconds": _NON_NEGATIVE,
                }
            ),
        },
        "affinity": _closed(
            {
                "podAntiAffinity": {"type": "object"},
                "podAffinity": {"type": "object"},
                "nodeAffinity": {"type": "object"},
            }
        ),
        "terminationGracePeriodSeconds": _NON_NEGATIVE,
        "securityContext": _closed(
            {
                "runAsUser": _NON_NEGATIVE,
                "runAsGroup": _NON_NEGATIVE,
                "runAsNonRoot": _BOOL,
                "fsGroup": _NON_NEGATIVE,
                "seccompProfile": _closed({"type": {"enum": ["RuntimeDefault", "Localhost", "Unconfined"]}}, ("type",)),
            }
        ),
        "serviceAccountName": _DNS_SUBDOMAIN,
        "priorityClassName": _DNS_SUBDOMAIN,
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never"]},
    },
    ("containers",),
)


def _object(api_version: str, kind: str, spec: Schema | None, extra: Schema | None = None) -> Schema:
    properties: Schema = {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": METADATA}
    required = ["apiVersion", "kind", "metadata"]
    if spec is not None:
        properties["spec"] = spec
        required.append("spec")
    properties.update(extra or {})
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


DEPLOYMENT: Final = _object(
    "apps/v1",
    "Deployment",
    _closed(
        {
            "replicas": _NON_NEGATIVE,
            "revisionHistoryLimit": _NON_NEGATIVE,
            "minReadySeconds": _NON_NEGATIVE,
            "progressDeadlineSeconds": _POSITIVE,
            "selector": _LABEL_SELECTOR,
            "strategy": _closed(
                {
                    "type": {"enum": ["RollingUpdate", "Recreate"]},
                    "rollingUpdate": _closed({"maxSurge": _PERCENT_OR_INT, "maxUnavailable": _PERCENT_OR_INT}),
                }
            ),
            "template": _closed({"metadata": _TEMPLATE_METADATA, "spec": POD_SPEC}, ("metadata", "spec")),
        },
        ("selector", "template"),
    ),
)
SERVICE: Final = _object(
    "v1",
    "Service",
    _closed(
        {
            "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
            "clusterIP": {"type": "string"},
            "selector": {**_LABELS, "minProperties": 1},
            "ports": {
                "type": "array",
                "minItems": 1,
                "items": _closed(
                    {
                        "name": _PORT_NAME,
                        "port": _PORT_NUMBER,
                        "targetPort": _PORT_REF,
                        "protocol": _PROTOCOL,
                        "nodePort": _PORT_NUMBER,
                    },
                    ("port",),
                ),
            },
            "publishNotReadyAddresses": _BOOL,
            "externalTrafficPolicy": {"enum": ["Cluster", "Local"]},
            "sessionAffinity": {"enum": ["None", "ClientIP"]},
        },
        ("selector", "ports"),
    ),
)
_STRING_MAP: Final[Schema] = {"type": "object", "additionalProperties": {"type": "string"}}
CONFIG_MAP: Final = _object("v1", "ConfigMap", None, {"data": _STRING_MAP, "immutable": _BOOL})
SECRET: Final = _object(
    "v1",
    "Secret",
    None,
    {"type": {"type": "string"}, "stringData": _STRING_MAP, "data": _STRING_MAP, "immutable": _BOOL},
)
NAMESPACE: Final = _object("v1", "Namespace", None)
_SCALING_RULES: Final = _closed(
    {
        "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "policies": {
            "type": "array",
            "items": _closed(
                {
                    "type": {"enum": ["Pods", "Percent"]},
                    "value": _POSITIVE,
                    "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800},
                },
                ("type", "value", "periodSeconds"),
            ),
        },
    }
)
_METRIC_TARGET: Final = {
    **_closed(
        {
            "type": {"enum": ["Utilization", "Value", "AverageValue"]},
            "value": _QUANTITY,
            "averageValue": _QUANTITY,
            "averageUtilization": _POSITIVE,
        },
        ("type",),
    ),
    # The target field must be the one its type names.
    "allOf": [
        {"if": {"properties": {"type": {"const": "AverageValue"}}}, "then": {"required": ["averageValue"]}},
        {"if": {"properties": {"type": {"const": "Value"}}}, "then": {"required": ["value"]}},
        {"if": {"properties": {"type": {"const": "Utilization"}}}, "then": {"required": ["averageUtilization"]}},
    ],
}
HPA: Final = _object(
    "autoscaling/v2",
    "HorizontalPodAutoscaler",
    _closed(
        {
            "scaleTargetRef": _closed(
                {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "name": _DNS_SUBDOMAIN},
                ("kind", "name"),
            ),
            "minReplicas": _POSITIVE,
            "maxReplicas": _POSITIVE,
            "metrics": {
                "type": "array",
                "minItems": 1,
                "items": {
                    **_closed(
                        {
                            "type": {"enum": ["Pods", "Resource", "Object", "External", "ContainerResource"]},
                            "pods": _closed(
                                {
                                    "metric": _closed(
                                        {"name": {"type": "string"}, "selector": {"type": "object"}}, ("name",)
                                    ),
                                    "target": _METRIC_TARGET,
                                },
                                ("metric", "target"),
                            ),
                            "resource": _closed(
                                {"name": {"type": "string"}, "target": _METRIC_TARGET}, ("name", "target")
                            ),
                        },
                        ("type",),
                    ),
                    "allOf": [
                        {"if": {"properties": {"type": {"const": "Pods"}}}, "then": {"required": ["pods"]}},
                        {"if": {"properties": {"type": {"const": "Resource"}}}, "then": {"required": ["resource"]}},
                    ],
                },
            },
            "behavior": _closed({"scaleUp": _SCALING_RULES, "scaleDown": _SCALING_RULES}),
        },
        ("scaleTargetRef", "maxReplicas"),
    ),
)
PDB: Final = _object(
    "policy/v1",
    "PodDisruptionBudget",
    {
        **_closed(
            {"selector": _LABEL_SELECTOR, "minAvailable": _PERCENT_OR_INT, "maxUnavailable": _PERCENT_OR_INT},
            ("selector",),
        ),
        # The API accepts one of the two, never both.
        "oneOf": [{"required": ["minAvailable"]}, {"required": ["maxUnavailable"]}],
    },
)

SCHEMAS: Final[dict[tuple[str, str], Schema]] = {
    ("apps/v1", "Deployment"): DEPLOYMENT,
    ("v1", "Service"): SERVICE,
    ("v1", "ConfigMap"): CONFIG_MAP,
    ("v1", "Secret"): SECRET,
    ("v1", "Namespace"): NAMESPACE,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): HPA,
    ("policy/v1", "PodDisruptionBudget"): PDB,
}

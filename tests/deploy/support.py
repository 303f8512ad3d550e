"""Shared helpers of the deployment tests: file loading, the metric names avc exports, and a small PromQL scanner.

No container engine, Prometheus or Kubernetes API is available to the test suite, so the deployment
assets are checked statically. The PromQL scanner is deliberately small: it finds the metric names, label
matchers and grouping labels an expression uses and checks its brackets; it is not a PromQL parser, and
the expressions in deploy/ are kept simple enough for it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import yaml
from prometheus_client.metrics import MetricWrapperBase

from avc.config import Settings
from avc.metrics import Metrics

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = REPO_ROOT / "deploy"

# Labels Prometheus itself attaches to every scraped series (target labels and relabelling in
# deploy/prometheus/*.yml), so expressions may group or filter by them.
TARGET_LABELS: Final = frozenset({"instance", "job", "node", "namespace", "pod", "site"})
# Series Prometheus generates for every target; the only names an expression may use besides avc's own.
PROMETHEUS_SERIES: Final = frozenset({"up"})

# AVC_* variables the deployment sets that are not `avc.config.Settings` fields: other layers read them
# (Settings.extra keeps every AVC_* variable). A name outside Settings and this table is a typo.
EXTRA_AVC_VARIABLES: Final = {
    "AVC_MODELS_DIR": "the models folder (engines); the image also links /app/.models to it",
    "AVC_PG_DSN": "PostgreSQL for banking.migrate and the storage layer",
    "AVC_REDIS_URL": "Redis for the per-call context",
}

_HISTOGRAM_SUFFIXES: Final = ("_bucket", "_sum", "_count", "_created")
_TYPE_LINE: Final = re.compile(r"^# TYPE (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*) (?P<type>\w+)$", re.MULTILINE)

_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR: Final = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{(?P<body>[^{}]*)\}")
_MATCHER: Final = re.compile(r"(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_RANGE: Final = re.compile(r"\[[^\[\]]*\]")
_GROUPING: Final = re.compile(
    r"\b(?P<kind>by|without|on|ignoring|group_left|group_right)\s*\((?P<labels>[^()]*)\)", re.IGNORECASE
)
_OFFSET: Final = re.compile(r"\boffset\s+-?\w+", re.IGNORECASE)
_VARIABLE: Final = re.compile(r"\$\{?\w+\}?")
_NUMBER: Final = re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_IDENT: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS: Final = frozenset({"bool", "and", "or", "unless", "inf", "nan"})
_RATE_ARG: Final = re.compile(r"\b(?:rate|irate|increase)\s*\(\s*(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)")
_PAIRS: Final = {")": "(", "]": "[", "}": "{"}


def load_yaml_documents(path: Path) -> list[Any]:
    """Every YAML document of `path` (a `---` separated stream), empty documents dropped."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def load_yaml(path: Path) -> Any:
    """The single YAML document of `path`."""
    docs = load_yaml_documents(path)
    assert len(docs) == 1, f"{path} holds {len(docs)} YAML documents, expected one"
    return docs[0]


def load_script(path: Path) -> ModuleType:
    """Import a script under deploy/ (not a package) as a module, so its functions can be tested."""
    name = f"deploy_{path.stem.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, f"cannot import {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing look the module up while it executes
    spec.loader.exec_module(module)
    return module


def load_yaml_text(text: str) -> Any:
    """The single YAML document in `text` (e.g. a config file carried inside a ConfigMap)."""
    return yaml.safe_load(text)


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def yaml_files(folder: Path) -> Iterator[Path]:
    """Every .yml/.yaml file below `folder`, in a stable order."""
    yield from sorted(p for p in folder.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())


def unknown_avc_variables(names: Iterable[str]) -> set[str]:
    """The AVC_* names in `names` that neither `Settings` nor `EXTRA_AVC_VARIABLES` knows."""
    known = {f"AVC_{field.upper()}" for field in Settings.__dataclass_fields__ if field != "extra"}
    return {name for name in names if name.startswith("AVC_")} - known - EXTRA_AVC_VARIABLES.keys()


@cache
def exported_series() -> dict[str, frozenset[str]]:
    """Every series name avc's /metrics can expose, with the label names its samples carry.

    Names come from rendering a real `Metrics` registry; a labelled family without samples yet is
    still announced by its `# TYPE` line. Histograms expose `_bucket` (with `le`), `_sum`, `_count`;
    counters carry `_total` in the exposition and a `_created` companion.
    """
    metrics = Metrics()
    labels_of: dict[str, frozenset[str]] = {}
    # prometheus_client keeps label names on the metric wrapper only.
    for wrapper in vars(metrics).values():
        if isinstance(wrapper, MetricWrapperBase):
            labels_of[wrapper._name] = frozenset(wrapper._labelnames)
    series: dict[str, frozenset[str]] = {}
    for match in _TYPE_LINE.finditer(metrics.render().decode()):
        name, kind = match["name"], match["type"]
        base = name.removesuffix("_total") if kind == "counter" else name
        labels = labels_of.get(base, frozenset())
        if kind == "histogram":
            for suffix in _HISTOGRAM_SUFFIXES:
                series[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        elif kind == "counter":
            series[name] = labels
            series[base + "_created"] = labels
        else:
            series[name] = labels
    return series


@dataclass(frozen=True)
class PromQLUse:
    """What one PromQL expression refers to."""

    metrics: frozenset[str]
    matcher_labels: dict[str, frozenset[str]]  # metric name ("" for a bare selector) -> labels matched
    grouping_labels: frozenset[str]
    rate_arguments: tuple[str, ...]


def _without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def promql_uses(expr: str) -> PromQLUse:
    """The metric names, label matchers, grouping labels and rate() arguments of `expr`."""
    text = _without_strings(expr)
    matchers: dict[str, set[str]] = {}
    for selector in _SELECTOR.finditer(text):
        labels = {m["label"] for m in _MATCHER.finditer(selector["body"])}
        matchers.setdefault(selector["name"] or "", set()).update(labels)
    grouping: set[str] = set()
    for group in _GROUPING.finditer(text):
        grouping.update(label.strip() for label in group["labels"].split(",") if label.strip())
    rate_arguments = tuple(m["name"] for m in _RATE_ARG.finditer(text))
    text = _SELECTOR.sub(lambda m: f" {m['name'] or ''} ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names: set[str] = set()
    for ident in _IDENT.finditer(text):
        following = text[ident.end() :].lstrip()
        if following.startswith("(") or ident[0].lower() in _KEYWORDS:
            continue  # a function, an aggregation or an operator keyword
        names.add(ident[0])
    return PromQLUse(
        metrics=frozenset(names),
        matcher_labels={name: frozenset(labels) for name, labels in matchers.items()},
        grouping_labels=frozenset(grouping),
        rate_arguments=rate_arguments,
    )


def brackets_balanced(expr: str) -> bool:
    """True when (), [] and {} nest correctly outside string literals."""
    stack: list[str] = []
    for char in _without_strings(expr):
        if char in "([{":
            stack.append(char)
        elif char in _PAIRS and (not stack or stack.pop() != _PAIRS[char]):
            return False
    return not stack


def promql_problems(expr: str) -> list[str]:
    """Everything in `expr` that does not match what avc exports; empty when the expression is sound."""
    problems: list[str] = []
    if not brackets_balanced(expr):
        problems.append("unbalanced brackets")
    known = exported_series()
    use = promql_uses(expr)
    for name in sorted(use.metrics - known.keys() - PROMETHEUS_SERIES):
        problems.append(f"unknown metric {name}")
    allowed_labels = set(TARGET_LABELS)
    for name in use.metrics:
        allowed_labels |= known.get(name, frozenset())
    for name, labels in use.matcher_labels.items():
        own = known.get(name, frozenset()) | TARGET_LABELS if name else allowed_labels
        for label in sorted(labels - own - {"__name__"}):
            problems.append(f"{name or 'selector'} has no label {label}")
    for label in sorted(use.grouping_labels - allowed_labels):
        problems.append(f"grouping by {label}, which none of the metrics carries")
    for name in use.rate_arguments:
        if name in known and not name.endswith(("_total", "_bucket", "_sum", "_count")):
            problems.append(f"rate()/increase() of {name}, which is not a counter")
    if "histogram_quantile" in expr:
        if not any(name.endswith("_bucket") for name in use.metrics):
            problems.append("histogram_quantile without a _bucket series")
        if "le" not in use.grouping_labels:
            problems.append("histogram_quantile without `le` in the aggregation")
    return problems

"""The files of deploy/observability/ and the metric names they use (importable as `observability_files`).

The names are read from the files themselves, so a test that compares them with a daemon's `/metrics`
can never drift from what the dashboard and the alert rules ask for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DASHBOARD_FILE",
    "OBSERVABILITY",
    "RULES_FILE",
    "alert_rules",
    "dashboard",
    "exposed_series_names",
    "expressions",
    "metric_names",
    "missing_metrics",
    "rule_groups",
    "used_metric_names",
]

ROOT = Path(__file__).resolve().parents[1]
OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARD_FILE = OBSERVABILITY / "dashboard.json"
RULES_FILE = OBSERVABILITY / "prometheusrule.yaml"

# An exporter metric in PromQL or prose; not part of a longer identifier (`dli_exporter_x`, `$exporter_x`).
_METRIC = re.compile(r"(?<![\w$])exporter_[a-z_]+")
# The series a family of each type puts on the wire, by suffix; a counter's family is named with `_total`
# already, its `_created` series without it.
_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "untyped": ("",),
}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return data


def rule_groups(manifest: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The PrometheusRule's `spec.groups`: what a plain Prometheus (and promtool) reads as a rule file."""
    rule = manifest if manifest is not None else yaml.safe_load(RULES_FILE.read_text())
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def alert_rules(groups: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [rule for group in groups or rule_groups() for rule in group["rules"] if "alert" in rule]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def expressions() -> list[str]:
    """Every PromQL text: the rules' `expr` and every string of the dashboard (queries, variables, prose)."""
    return [str(rule["expr"]) for group in rule_groups() for rule in group["rules"]] + list(
        _strings(dashboard())
    )


def metric_names(texts: Iterable[str]) -> set[str]:
    return {name for text in texts for name in _METRIC.findall(text)}


def used_metric_names() -> set[str]:
    return metric_names(expressions())


def exposed_series_names(exposition: str) -> set[str]:
    """Every series name a Prometheus text exposition can hold: each family's as its type allows (from
    the `# TYPE` lines, printed even for a labelled family with no child yet), and each sample's."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            kind = kind.strip()
            names.update(family + suffix for suffix in _SUFFIXES.get(kind, ("",)))
            if kind == "counter":
                names.add(family.removesuffix("_total") + "_created")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def missing_metrics(used: Iterable[str], exposition: str) -> list[str]:
    """The used names no series of the exposition can carry (a typo, a renamed or a removed metric)."""
    exposed = exposed_series_names(exposition)
    return sorted(name for name in set(used) if name not in exposed)

"""deploy/observability/: the kustomize component, its ServiceMonitor, alert rules and Grafana dashboard.

Each overlay is rendered with the component added as README says (a `components:` line in a copy of the
overlay) by the kustomize built into kubectl; core objects are validated against the Kubernetes schemas
and the Prometheus Operator's objects against what the daemon serves. The rules and every dashboard
query go through the real `promtool` (Debian's `prometheus` package, which .ci/run installs), and the
rules' unit tests in tests/vectors/alert_rules.test.yaml run there too.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from observability_files import (
    DASHBOARD_FILE,
    OBSERVABILITY,
    RULES_FILE,
    alert_rules,
    dashboard,
    metric_names,
    rule_groups,
)
from test_deploy import DEPLOY, KUBERNETES_VERSIONS, OVERLAYS, PROBE_PATHS, Manifest, of_kind, one, render

ROOT = DEPLOY.parent
NAMESPACE = "dli-exporter"
ADDED = {
    ("ServiceMonitor", "dli-exporter"),
    ("PrometheusRule", "dli-exporter"),
    ("ConfigMap", "dli-exporter-dashboard"),
}
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # CRDs: no schema in kubernetes-validate
ALERTS = {
    "DliExporterNoProgress",
    "DliExporterThrottled",
    "DliExporterDeadLetters",
    "DliExporterZipsMissing",
    "DliExporterAuthFailing",
    "DliExporterNotReady",
}
# What the dashboard must show (issue 15): rate against the limit, 429s and retries, chunks, verification,
# queue depth, dead letters, campaign progress.
DASHBOARD_METRICS = {
    "exporter_rate_limit_per_second",
    "exporter_rate_stated_limit_per_second",
    "exporter_rate_throttled_total",
    "exporter_dli_requests_total",
    "exporter_dli_retries_total",
    "exporter_chunks_total",
    "exporter_verify_results_total",
    "exporter_queue_depth",
    "exporter_dead_letters_total",
    "exporter_campaign_jobs",
}
DATASOURCE = "${DS_PROMETHEUS}"
KUBECTL_APPLY_ANNOTATION_LIMIT = 262_144  # bytes: client-side apply keeps the whole object in one annotation
SERVICE_MONITOR_SPEC = {
    "jobLabel",
    "selector",
    "endpoints",
    "namespaceSelector",
    "targetLabels",
    "podTargetLabels",
}
ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "honorLabels", "scheme", "relabelings"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: install Debian's `prometheus` package (.ci/run does)")
    return found


def run_promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def write_rules(path: Path, groups: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


# --- rendering the overlays with the component ------------------------------------------------------------
def with_component(workdir: Path, overlay: str) -> Path:
    """A copy of deploy/ whose overlay has the README's line `components: [../../../observability]`."""
    copied = workdir / overlay / "deploy"
    shutil.copytree(DEPLOY / "k8s", copied / "k8s")
    shutil.copytree(OBSERVABILITY, copied / "observability")
    kustomization = copied / "k8s" / "overlays" / overlay / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "\ncomponents:\n  - ../../../observability\n")
    return kustomization.parent


@pytest.fixture(scope="module")
def plain() -> dict[str, list[Manifest]]:
    return {overlay: render(DEPLOY / "k8s" / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    workdir = tmp_path_factory.mktemp("monitored")
    return {overlay: render(with_component(workdir, overlay)) for overlay in OVERLAYS}


def names(objects: list[Manifest]) -> set[tuple[str, str]]:
    return {(item["kind"], item["metadata"]["name"]) for item in objects}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_component_adds_its_three_objects_in_the_overlays_namespace(
    plain: dict[str, list[Manifest]], monitored: dict[str, list[Manifest]], overlay: str
) -> None:
    """The overlay renders as before plus a ServiceMonitor, a PrometheusRule and the dashboard ConfigMap."""
    assert names(monitored[overlay]) - names(plain[overlay]) == ADDED
    assert names(plain[overlay]) <= names(monitored[overlay])
    added = [item for item in monitored[overlay] if (item["kind"], item["metadata"]["name"]) in ADDED]
    assert {item["metadata"].get("namespace") for item in added} == {NAMESPACE}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitored_overlay_validates(
    monitored: dict[str, list[Manifest]], overlay: str, version: str
) -> None:
    """Every core object validates strictly; the operator's objects pass the checks below instead."""
    for item in monitored[overlay]:
        if item["kind"] in OPERATOR_KINDS:
            assert item["apiVersion"] == "monitoring.coreos.com/v1", item["kind"]
        else:
            kubernetes_validate.validate(item, version, strict=True)


def test_dashboard_configmap_is_the_dashboard_for_the_sidecar(monitored: dict[str, list[Manifest]]) -> None:
    """Labelled for Grafana's sidecar, holding dashboard.json as it is, small enough for `kubectl apply`."""
    configmap = next(
        item
        for item in of_kind(monitored["embedded"], "ConfigMap")
        if item["metadata"]["name"] == "dli-exporter-dashboard"
    )
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"dli-exporter.json": DASHBOARD_FILE.read_text()}
    assert len(DASHBOARD_FILE.read_bytes()) < KUBECTL_APPLY_ANNOTATION_LIMIT // 2


# --- the ServiceMonitor scrapes what the daemon serves ------------------------------------------------------
def _job_names_in_rules() -> set[str]:
    return set(re.findall(r'\bup\{[^}]*job="([^"]+)"', RULES_FILE.read_text()))


def service_monitor_problems(objects: list[Manifest]) -> list[str]:
    """It selects the Service, scrapes a port the Service names on a path the daemon serves, and labels
    `job` with the value the rules' `up{job=...}` asks for."""
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    spec, labels = monitor["spec"], service["metadata"].get("labels", {})
    problems = [f"ServiceMonitor: unknown field spec.{key}" for key in spec.keys() - SERVICE_MONITOR_SPEC]
    wanted = spec.get("selector", {}).get("matchLabels", {})
    if not wanted or any(labels.get(key) != value for key, value in wanted.items()):
        problems.append(f"ServiceMonitor: selector {wanted} does not select the Service (labels {labels})")
    ports = {port.get("name") for port in service["spec"]["ports"]}
    for endpoint in spec.get("endpoints", []):
        problems += [
            f"ServiceMonitor: unknown endpoint field {key}" for key in endpoint.keys() - ENDPOINT_FIELDS
        ]
        if endpoint.get("port") not in ports:
            problems.append(
                f"ServiceMonitor: port {endpoint.get('port')!r} is not a port of the Service {ports}"
            )
        if endpoint.get("path", "/metrics") not in PROBE_PATHS:
            problems.append(f"ServiceMonitor: path {endpoint.get('path')!r} is not served")
    job = labels.get(spec.get("jobLabel", ""), service["metadata"]["name"])
    if {job} != _job_names_in_rules():
        problems.append(f"ServiceMonitor: job {job!r}, but the rules ask for {_job_names_in_rules()}")
    return problems


def _break_port(objects: list[Manifest]) -> None:
    one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["port"] = "metrics"


def _break_path(objects: list[Manifest]) -> None:
    one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["path"] = "/prometheus"


def _break_selector(objects: list[Manifest]) -> None:
    one(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"] = {"app": "dli-exporter"}


def _break_job(objects: list[Manifest]) -> None:
    del one(objects, "ServiceMonitor")["spec"]["jobLabel"]
    one(objects, "Service")["metadata"]["name"] = "prod-dli-exporter"


def _break_field(objects: list[Manifest]) -> None:
    one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["scrapeInterval"] = "30s"


MONITOR_BREAKAGES: dict[str, Callable[[list[Manifest]], None]] = {
    "unknown-port": _break_port,
    "unserved-path": _break_path,
    "selects-nothing": _break_selector,
    "job-the-rules-miss": _break_job,
    "misspelt-field": _break_field,
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_scrapes_the_daemon(monitored: dict[str, list[Manifest]], overlay: str) -> None:
    """The ServiceMonitor passes its checks in both overlays."""
    assert service_monitor_problems(monitored[overlay]) == []


@pytest.mark.parametrize("breakage", MONITOR_BREAKAGES)
def test_service_monitor_checks_catch_a_broken_one(
    monitored: dict[str, list[Manifest]], breakage: str
) -> None:
    """Each way of breaking the ServiceMonitor is noticed."""
    objects = copy.deepcopy(monitored["embedded"])
    MONITOR_BREAKAGES[breakage](objects)
    assert service_monitor_problems(objects), f"no check noticed {breakage}"


# --- the alert rules ----------------------------------------------------------------------------------------
def test_rendered_rules_pass_promtool_check(monitored: dict[str, list[Manifest]], tmp_path: Path) -> None:
    """The PrometheusRule's groups, as the overlay renders them, are a valid rule file for promtool."""
    rules = write_rules(tmp_path / "rules.yaml", rule_groups(one(monitored["embedded"], "PrometheusRule")))
    checked = run_promtool("check", "rules", rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_promtool_check_fails_on_a_broken_rule(tmp_path: Path) -> None:
    """The check is real: an expression that is not PromQL fails it."""
    groups = rule_groups()
    groups[0]["rules"][0]["expr"] = "sum by (namespace (exporter_queue_depth)"
    checked = run_promtool("check", "rules", write_rules(tmp_path / "rules.yaml", groups))
    assert checked.returncode != 0


def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """promtool's unit tests of the alerts (tests/vectors/alert_rules.test.yaml) pass: each fires on the
    trouble it names, after its `for`, and not for a healthy namespace beside it."""
    groups = copy.deepcopy(rule_groups())
    for rule in alert_rules(groups):
        rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    write_rules(tmp_path / "rules.yaml", groups)
    shutil.copy(ROOT / "tests" / "vectors" / "alert_rules.test.yaml", tmp_path / "alerts.test.yaml")
    tested = run_promtool("test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_says_what_to_do() -> None:
    """The six alerts of issue 15, each with a severity, a summary and a description of what to do, and
    each explained in README.md."""
    rules = alert_rules()
    readme = (ROOT / "README.md").read_text()
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"]) > 200, rule["alert"]
        assert f"`{rule['alert']}`" in readme, f"README does not explain {rule['alert']}"


# --- the dashboard ------------------------------------------------------------------------------------------
def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel's query, with the template variables filled in, parses (as recording rules in promtool)."""
    filled = {"$namespace": ".*", "$endpoint": ".*", "$campaign": ".*"}
    records = []
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in filled.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"panel {panel['title']!r} uses an unknown variable: {expr}"
            records.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expr})
    rules = write_rules(tmp_path / "dashboard.yaml", [{"name": "dashboard", "rules": records}])
    checked = run_promtool("check", "rules", rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_takes_its_datasource_and_endpoint_as_variables() -> None:
    """The datasource is the variable DS_PROMETHEUS everywhere; endpoint (region), namespace and campaign
    are variables the queries filter on."""
    variables = {item["name"]: item for item in dashboard()["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert {"namespace", "endpoint", "campaign"} <= variables.keys()
    for panel in panels():
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"]["uid"] == DATASOURCE for target in panel["targets"]), panel["title"]
    assert any("$endpoint" in target["expr"] for panel in panels() for target in panel["targets"])


def test_dashboard_panels_are_laid_out_and_show_what_the_issue_asks() -> None:
    """Unique panel IDs, panels inside 24 columns without overlapping, and every metric issue 15 names."""
    every = dashboard()["panels"]
    assert len({panel["id"] for panel in every}) == len(every)
    taken: set[tuple[int, int]] = set()
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']!r} overlaps another panel"
        taken |= cells
    assert metric_names([DASHBOARD_FILE.read_text()]) >= DASHBOARD_METRICS

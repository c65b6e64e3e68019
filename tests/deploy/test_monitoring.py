"""deploy/monitoring/: alert rules, Grafana dashboard and scrape config name real metrics and hold together.

The metric names are checked against what the code exports (found in edge/ the way the Prometheus
client names them), the runbook links against docs/operations.md, the scrape targets against the
example inventory and compose file. With ``promtool`` on PATH (Debian: ``apt-get install
prometheus``) the rules and the config are checked by Prometheus itself, every dashboard query is
parsed, and the main alerts are run against synthetic series (``promtool test rules``).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.support import CONFIG, DEPLOY, DOCS, ROOT, load_yaml_documents, port_of, read_toml, yaml_module

MONITORING = DEPLOY / "monitoring"
ALERTS = MONITORING / "alerts.yml"
PROMETHEUS = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
README = MONITORING / "README.md"

EDGE_JOB = "edgecache-edge"
ROUTER_JOB = "edgecache-router"
SEVERITIES = {"page", "ticket"}
REQUIRED_ALERTS = {
    "EdgecacheEdgeDown",
    "EdgecacheRegionDown",
    "EdgecacheEdgeScrapeDown",
    "EdgecacheHitRatioDrop",
    "EdgecachePurgeLag",
    "EdgecachePurgeLogDown",
    "EdgecacheOriginErrors",
    "EdgecacheOriginDown",
    "EdgecacheDiskTierFull",
    "Edgecache5xxRate",
    "EdgecacheWorkersMissing",
    "EdgecacheNoHealthyEdge",
    "EdgecacheControlPlaneDisconnected",
}

# Families added with #16's metrics, possibly not in edge/ yet when this runs: name → kind. Once
# the code defines them, the scan below finds them too, and the kind is checked against this.
ADDED_WITH_16 = {
    "edgecache_tier_capacity_bytes": "gauge",
    "edgecache_connections_active": "gauge",
    "edgecache_connections_accepted": "counter",
    "edgecache_request_seconds": "histogram",
    "edgecache_build_info": "gauge",
}

# Metrics every panel set should show (the dashboard's reason to exist), by the exposed name.
DASHBOARD_MUST_USE = {
    "edgecache_requests_total",
    "edgecache_bytes_served_total",
    "edgecache_request_seconds_bucket",
    "edgecache_origin_latency_seconds_bucket",
    "edgecache_responses_total",
    "edgecache_router_edge_up",
    "edgecache_router_purge_lag",
    "edgecache_tier_bytes",
    "edgecache_tier_capacity_bytes",
    "edgecache_connections_active",
    "edgecache_protection_refusals_total",
    "edgecache_origin_up",
    "edgecache_origin_errors_total",
    "edgecache_errors_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
}

# `Counter("x", ...)`, `CounterMetricFamily(\n    "x", ...)`, `HistogramMetricFamily("x", ...)`, ...
FAMILY = re.compile(
    r"\b(?P<kind>Counter|Gauge|Histogram|Summary|Info|Enum|StateSet)(?:MetricFamily)?\(\s*[\"'](?P<name>edgecache_[a-z_]+)[\"']"
)
KINDS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary",
         "Info": "info", "Enum": "stateset", "StateSet": "stateset"}  # fmt: skip
METRIC = re.compile(r"(?<![\w:])edgecache_[a-z_]+")
PROCESS_METRIC = re.compile(r"(?<![\w:])process_[a-z_]+")  # the client library's process collector
JOB_SELECTOR = re.compile(r"\bjob=\"([^\"]+)\"")
DURATION = re.compile(r"^(?:\d+(?:ms|[smhdwy]))+$")
LABEL_REF = re.compile(r"\$labels\.(\w+)")
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s", "__range_ms"}


# --- what the code exports -----------------------------------------------------------------------


@cache
def source_families() -> dict[str, str]:
    """Every metric family edge/ defines: family name (as the client registers it) → kind."""
    families: dict[str, str] = {}
    for path in sorted((ROOT / "edge").rglob("*.py")):
        for match in FAMILY.finditer(path.read_text()):
            kind = KINDS[match["kind"]]
            name = match["name"]
            if kind == "counter":
                name = name.removesuffix("_total")  # the client strips it and puts it back on the sample
            families[name] = kind
    return families


def exposed_names(name: str, kind: str) -> set[str]:
    """The sample names Prometheus stores for one family (what a query can name)."""
    match kind:
        case "counter":
            return {f"{name}_total", f"{name}_created"}
        case "histogram":
            return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        case "summary":
            return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
        case "info":
            return {f"{name.removesuffix('_info')}_info"}
        case _:
            return {name}


@cache
def process_metrics() -> dict[str, frozenset[str]]:
    """The ``process_*`` samples each program exposes, by job: from the collectors the code registers,
    run here on this process (they are not in edge/'s source as literal names)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from edge.metrics import EdgeProcessCollector
    from edge.router.app import RouterMetrics

    edge = CollectorRegistry(auto_describe=False)
    edge.register(EdgeProcessCollector([{"pid": os.getpid()}], "e"))
    found = {}
    for job_name, registry in ((EDGE_JOB, edge), (ROUTER_JOB, RouterMetrics().registry)):
        text = generate_latest(registry).decode()
        found[job_name] = frozenset(sample.name for family in text_string_to_metric_families(text)
                                    for sample in family.samples if sample.name.startswith("process_"))  # fmt: skip
    return found


@cache
def known_metrics() -> frozenset[str]:
    families = {**ADDED_WITH_16, **source_families()}
    exposed = {sample for name, kind in families.items() for sample in exposed_names(name, kind)}
    return frozenset(exposed.union(*process_metrics().values()))


def metric_names(expr: str) -> set[str]:
    return set(METRIC.findall(expr)) | set(PROCESS_METRIC.findall(expr))


def unknown_metrics(expr: str) -> set[str]:
    return metric_names(expr) - known_metrics()


def test_the_source_scan_finds_the_families() -> None:
    """Guards the regular expression: if the code's style changes, this fails instead of everything passing."""
    families = source_families()
    assert families.get("edgecache_requests") == "counter"
    assert families.get("edgecache_router_redirects") == "counter"
    assert families.get("edgecache_router_geodb_reloads") == "counter"  # Counter("..._total"): suffix stripped
    assert families.get("edgecache_router_edge_up") == "gauge"
    assert families.get("edgecache_origin_latency_seconds") == "histogram"
    assert families.get("edgecache_router_decision_seconds") == "histogram"
    assert "edgecache_requests_total" in known_metrics()
    assert "edgecache_requests" not in known_metrics()  # the bare family name of a counter selects nothing
    assert "edgecache_origin_latency_seconds_bucket" in known_metrics()


@pytest.mark.parametrize("name", sorted(ADDED_WITH_16))
def test_the_allowlisted_metrics_have_the_assumed_kind(name: str) -> None:
    kind = source_families().get(name)
    if kind is None:
        pytest.skip(f"{name} is not defined in edge/ yet (allowlisted: added with #16's metrics)")
    assert kind == ADDED_WITH_16[name], f"{name} is a {kind} in edge/, the queries here treat it as a {ADDED_WITH_16[name]}"


# --- alerts.yml ----------------------------------------------------------------------------------


@cache
def alert_groups() -> list[dict[str, Any]]:
    (document,) = load_yaml_documents(ALERTS)
    assert set(document) == {"groups"}, "alerts.yml: a rule file has one key, groups"
    return document["groups"]


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in alert_groups() for rule in group["rules"] if "alert" in rule]


def test_rule_groups_are_well_formed() -> None:
    names = [group["name"] for group in alert_groups()]
    assert len(names) == len(set(names)), f"duplicate group names: {names}"
    for group in alert_groups():
        assert set(group) <= {"name", "interval", "rules", "limit"}, group["name"]
        assert group["rules"], f"group {group['name']} has no rules"
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), f"{group['name']}: {rule}"


def test_the_required_alerts_are_there_once() -> None:
    names = [rule["alert"] for rule in alerting_rules()]
    assert len(names) == len(set(names)), f"duplicate alert names: {sorted(names)}"
    assert set(names) >= REQUIRED_ALERTS, f"missing alerts: {sorted(REQUIRED_ALERTS - set(names))}"


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: rule["alert"])
def test_alert_rule_has_what_on_call_needs(rule: dict[str, Any]) -> None:
    assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, sorted(rule)
    assert isinstance(rule.get("expr"), str)
    assert rule["expr"].strip()
    assert DURATION.match(str(rule.get("for", ""))), f"{rule['alert']}: `for` missing or not a duration"
    assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{rule['alert']}: severity page or ticket"
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{rule['alert']}: annotation {key} missing"
    text = annotations["summary"] + annotations["description"]
    assert LABEL_REF.search(text), f"{rule['alert']}: say which edge/origin/router ({{{{ $labels.… }}}})"


def github_anchors(path: Path) -> set[str]:
    anchors = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", heading).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: rule["alert"])
def test_runbook_points_at_a_real_section(rule: dict[str, Any]) -> None:
    target, _, anchor = rule["annotations"]["runbook_url"].partition("#")
    assert (ROOT / target).is_file(), f"{rule['alert']}: {target} does not exist"
    assert (ROOT / target).resolve().parent == DOCS.resolve(), f"{rule['alert']}: runbooks live in docs/"
    assert anchor in github_anchors(ROOT / target), f"{rule['alert']}: {target} has no section #{anchor}"


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: rule["alert"])
def test_alert_uses_exported_metrics(rule: dict[str, Any]) -> None:
    assert not unknown_metrics(rule["expr"]), f"{rule['alert']} queries metrics nobody exports"


def test_alerts_name_only_scraped_jobs() -> None:
    jobs = {job["job_name"] for job in scrape_configs()}
    for rule in alerting_rules():
        for job in re.findall(r"job=\"([^\"]+)\"", rule["expr"]):
            assert job in jobs, f"{rule['alert']} selects job {job!r}, which prometheus.yml does not scrape"


# --- grafana-dashboard.json ----------------------------------------------------------------------


@cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def query_panels() -> list[dict[str, Any]]:
    return [panel for panel in all_panels() if panel["type"] != "row"]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every panel target and every query variable."""
    exprs = [(f"panel {panel['id']} {target['refId']}", target["expr"])
             for panel in query_panels() for target in panel["targets"]]  # fmt: skip
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append((f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query))
    return exprs


def test_dashboard_header() -> None:
    board = dashboard()
    assert board["uid"] == "edgecache-overview"
    assert board.get("id") is None, "an exported id would clash on import: leave it null"
    assert 36 <= board["schemaVersion"] <= 41
    assert board["title"]


def test_dashboard_variables() -> None:
    variables = {variable["name"]: variable for variable in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("edge", "region"):
        variable = variables[name]
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        assert variable["type"] == "query"
        assert query.startswith("label_values("), f"{name}: {query}"
        assert query.rstrip().endswith(f", {name})"), f"{name}: {query}"
        assert variable["datasource"]["uid"] == "${datasource}"


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in all_panels()]
    assert all(isinstance(panel_id, int) for panel_id in ids)
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"


def test_panels_sit_on_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(pos), panel["title"]
        assert all(isinstance(pos[key], int) and pos[key] >= 0 for key in "hwxy"), panel["title"]
        assert pos["w"] >= 1
        assert pos["h"] >= 1
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} is wider than the grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_panels_query_the_chosen_datasource() -> None:
    for panel in query_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_dashboard_uses_exported_metrics() -> None:
    unknown = {where: sorted(unknown_metrics(expr)) for where, expr in dashboard_exprs() if unknown_metrics(expr)}
    assert not unknown, f"dashboard queries metrics nobody exports: {unknown}"


def test_dashboard_covers_the_essentials() -> None:
    used = {name for _, expr in dashboard_exprs() for name in metric_names(expr)}
    missing = DASHBOARD_MUST_USE - used
    assert not missing, f"no panel shows {sorted(missing)}"


def test_the_process_scan_finds_the_collectors() -> None:
    """Guards process_metrics(): both programs expose CPU, memory and descriptors."""
    for job_name, names in process_metrics().items():
        assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= names, job_name


def test_dashboard_process_queries_name_their_job() -> None:
    """process_* is what every exporter exposes: a query must say whose, and that job must export it."""
    for where, expr in dashboard_exprs():
        names = set(PROCESS_METRIC.findall(expr))
        if not names:
            continue
        jobs = set(JOB_SELECTOR.findall(expr))
        assert jobs, f"{where}: {sorted(names)} without a job selector mixes in every other exporter"
        for job_name in jobs:
            assert names <= process_metrics().get(job_name, frozenset()), f"{where}: {job_name} does not export {names}"


def test_dashboard_selects_only_scraped_jobs() -> None:
    jobs = {job["job_name"] for job in scrape_configs()}
    for where, expr in dashboard_exprs():
        unknown = set(JOB_SELECTOR.findall(expr)) - jobs
        assert not unknown, f"{where} selects jobs {sorted(unknown)}, which prometheus.yml does not scrape"


def panels_showing(metric: str) -> list[dict[str, Any]]:
    return [panel for panel in query_panels() if any(metric in target["expr"] for target in panel["targets"])]


def test_dashboard_shows_errors_by_status_and_reason() -> None:
    exprs = [target["expr"] for panel in panels_showing("edgecache_errors_total") for target in panel["targets"]]
    assert any(re.search(r"sum by \(status, reason\) \(rate\(edgecache_errors_total\{", expr) for expr in exprs), exprs


@pytest.mark.parametrize("metric", ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"])
def test_dashboard_shows_process_metrics_per_instance_of_edges_and_routers(metric: str) -> None:
    (panel,) = panels_showing(metric)
    jobs = {job_name for target in panel["targets"] for job_name in JOB_SELECTOR.findall(target["expr"])}
    assert jobs == {EDGE_JOB, ROUTER_JOB}, panel["title"]
    counter_as_rate = ("rate(" in panel["targets"][0]["expr"]) == metric.endswith("_total")
    assert counter_as_rate, f"{panel['title']}: a counter is shown as a rate, a gauge as it is"


def test_dashboard_variables_referenced_exist() -> None:
    defined = {variable["name"] for variable in dashboard()["templating"]["list"]} | GRAFANA_BUILTINS
    for where, expr in dashboard_exprs():
        used = set(re.findall(r"\$\{?(\w+)", expr))
        assert used <= defined, f"{where} uses undefined variables {sorted(used - defined)}"


# --- prometheus.yml ------------------------------------------------------------------------------


@cache
def prometheus_config() -> dict[str, Any]:
    (document,) = load_yaml_documents(PROMETHEUS)
    return document


def scrape_configs() -> list[dict[str, Any]]:
    return prometheus_config()["scrape_configs"]


def job(name: str) -> dict[str, Any]:
    (found,) = [job for job in scrape_configs() if job["job_name"] == name]
    return found


def test_prometheus_loads_the_rules() -> None:
    assert prometheus_config()["rule_files"] == ["alerts.yml"]
    assert (PROMETHEUS.parent / "alerts.yml").is_file()


@pytest.mark.parametrize("name", [EDGE_JOB, ROUTER_JOB])
def test_scrape_job_authenticates(name: str) -> None:
    config = job(name)
    assert config.get("metrics_path", "/metrics") == "/metrics"
    auth = config["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    assert auth["credentials_file"].startswith("/"), "credentials from a file, never inline"
    assert "credentials" not in auth


def test_edge_targets_are_the_inventory_admin_ports() -> None:
    """Each target is an inventory edge's admin_url (host:port), labelled with its region."""
    inventory = read_toml(CONFIG / "inventory.toml")
    expected = {urlsplit(edge["admin_url"]).netloc: edge["region"] for edge in inventory["edges"]}
    found = {target: group.get("labels", {}).get("region")
             for group in job(EDGE_JOB)["static_configs"] for target in group["targets"]}  # fmt: skip
    assert found == expected
    admin_port = port_of(read_toml(CONFIG / "edge-us-east.toml")["admin_listen"])
    assert {port_of(target) for target in found} == {admin_port}


def test_router_targets_are_the_compose_routers() -> None:
    (compose,) = load_yaml_documents(DEPLOY / "compose.yaml")
    routers = {name for name in compose["services"] if name.startswith("router")}
    admin_port = port_of(read_toml(CONFIG / "router.toml")["admin_listen"])
    targets = [target for group in job(ROUTER_JOB)["static_configs"] for target in group["targets"]]
    assert {target.rpartition(":")[0] for target in targets} == routers
    assert {port_of(target) for target in targets} == {admin_port}


# --- README.md -----------------------------------------------------------------------------------


def test_readme_explains_every_alert() -> None:
    text = README.read_text()
    missing = [rule["alert"] for rule in alerting_rules() if f"`{rule['alert']}`" not in text]
    assert not missing, f"deploy/monitoring/README.md does not explain {missing}"


def test_readme_names_real_metrics_and_files() -> None:
    text = README.read_text()
    families = {**ADDED_WITH_16, **source_families()}  # prose may name a family (a histogram, say)
    unknown = set(METRIC.findall(text)) - known_metrics() - set(families)
    assert not unknown, f"README names metrics nobody exports: {sorted(unknown)}"
    links = [link for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in link]
    broken = [link for link in links if not (README.parent / link).exists()]
    assert not broken, f"README has broken links: {broken}"


# --- promtool ------------------------------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found: `apt-get install prometheus` (Debian/Ubuntu) to check the rules, "
                    "the config and the dashboard queries with Prometheus itself")  # fmt: skip
    return path


def run_promtool(*args: str | Path, cwd: Path | None = None) -> None:
    result = subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"


def test_promtool_checks_the_rules() -> None:
    run_promtool("check", "rules", ALERTS)


def test_promtool_checks_the_config(tmp_path: Path) -> None:
    """The file as it is (syntax), then a copy whose token files exist, so that the full check runs
    and loads alerts.yml through rule_files."""
    run_promtool("check", "config", "--syntax-only", PROMETHEUS)
    config = copy.deepcopy(prometheus_config())
    for index, scrape in enumerate(config["scrape_configs"]):
        token = tmp_path / f"token-{index}"
        token.write_text("change-me\n")
        scrape["authorization"]["credentials_file"] = str(token)
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml_module().safe_dump(config, sort_keys=False))
    run_promtool("check", "config", tmp_path / "prometheus.yml")


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query, its Grafana variables filled in, as a recording rule: promtool parses the PromQL."""
    rules = []
    for index, (_where, expr) in enumerate(dashboard_exprs()):
        if expr.startswith("label_values("):
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr)
            assert match, expr
            expr = match[1]
        expr = re.sub(r"\$__\w+", "5m", expr)
        expr = re.sub(r"\$\{?\w+\}?", ".*", expr)
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml_module().safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", path)


def as_promql(expr: str) -> str:
    """A panel query as Prometheus sees it: every edge selected, Grafana's intervals as 5m."""
    return re.sub(r"\$\{?\w+\}?", ".*", re.sub(r"\$__\w+", "5m", expr))


def panel_target(metric: str, job_name: str | None = None) -> str:
    (panel,) = panels_showing(metric)
    (expr,) = [target["expr"] for target in panel["targets"]
               if job_name is None or f'job="{job_name}"' in target["expr"]]  # fmt: skip
    return as_promql(expr)


EDGE_SERIES = 'instance="edge-us-east:9080",job="edgecache-edge"'
EDGE_RESULT = '{edge="us-east-1",instance="edge-us-east:9080",job="edgecache-edge",region="us-east"}'
ROUTER_SERIES = 'instance="router-a:8081",job="edgecache-router"'


def test_promtool_evaluates_the_error_and_process_panels(tmp_path: Path) -> None:
    """The new panels' queries against synthetic series: errors summed by status and reason; each
    edge's process_* named by its edge (joined through edgecache_build_info, even while an upgrade
    leaves two versions' series) and each router's by its instance."""
    tool = promtool()
    series = {
        f'edgecache_errors_total{{edge="us-east-1",{EDGE_SERIES},status="502",reason="origin_unreachable"}}': "0+60x10",
        'edgecache_errors_total{edge="eu-west-1",instance="edge-eu-west:9080",job="edgecache-edge",status="502",'
        'reason="origin_unreachable"}': "0+120x10",
        f'edgecache_errors_total{{edge="us-east-1",{EDGE_SERIES},status="508",reason="loop_detected"}}': "0+15x10",
        f'process_cpu_seconds_total{{{EDGE_SERIES},region="us-east"}}': "0+120x10",
        f"process_cpu_seconds_total{{{ROUTER_SERIES}}}": "0+30x10",
        f'process_resident_memory_bytes{{{EDGE_SERIES},region="us-east"}}': "300000000x10",
        f"process_resident_memory_bytes{{{ROUTER_SERIES}}}": "50000000x10",
        f'process_open_fds{{{EDGE_SERIES},region="us-east"}}': "200x10",
        f"process_open_fds{{{ROUTER_SERIES}}}": "40x10",
        f'edgecache_build_info{{edge="us-east-1",{EDGE_SERIES},version="0.1.0"}}': "1x6",
        f'edgecache_build_info{{edge="us-east-1",{EDGE_SERIES},version="0.2.0"}}': "_x4 1x6",
        f'edgecache_build_info{{component="router",{ROUTER_SERIES},version="0.1.0"}}': "1x10",
    }
    checks: list[tuple[str, list[tuple[str, float]]]] = [
        (panel_target("edgecache_errors_total"),
         [('{reason="origin_unreachable",status="502"}', 3), ('{reason="loop_detected",status="508"}', 0.25)]),
        (panel_target("process_cpu_seconds_total", EDGE_JOB), [(EDGE_RESULT, 2)]),
        (panel_target("process_cpu_seconds_total", ROUTER_JOB), [(f"{{{ROUTER_SERIES}}}", 0.5)]),
        (panel_target("process_resident_memory_bytes", EDGE_JOB), [(EDGE_RESULT, 300000000)]),
        (panel_target("process_resident_memory_bytes", ROUTER_JOB),
         [(f"process_resident_memory_bytes{{{ROUTER_SERIES}}}", 50000000)]),
        (panel_target("process_open_fds", EDGE_JOB), [(EDGE_RESULT, 200)]),
        (panel_target("process_open_fds", ROUTER_JOB), [(f"process_open_fds{{{ROUTER_SERIES}}}", 40)]),
    ]  # fmt: skip
    (tmp_path / "none.yml").write_text("groups: []\n")
    test = {
        "rule_files": ["none.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": name, "values": values} for name, values in series.items()],
            "promql_expr_test": [
                {"expr": expr, "eval_time": "8m", "exp_samples": [{"labels": labels, "value": value} for labels, value in samples]}
                for expr, samples in checks
            ],
        }],
    }  # fmt: skip
    (tmp_path / "test.yml").write_text(yaml_module().safe_dump(test, sort_keys=False))
    result = subprocess.run([tool, "test", "rules", "test.yml"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


# --- promtool test rules: the alerts fire when they should, and only then --------------------------
#
# Each scenario: series (1 m apart: an instant selector sees nothing 5 m after the last sample, so
# only the hit ratio, all range selectors, takes 5 m), alerts, when to look, and the alerts expected
# then (full label sets). The rules under test are alerts.yml with each alert's annotations
# replaced by one that lists the labels its summary and description name: promtool then proves that
# every `{{ $labels.x }}` there has a value (a label lost to an aggregation would render empty).

EDGE_A = 'edge="us-east-1",instance="edge-us-east:9080",job="edgecache-edge"'
EDGE_B = 'edge="eu-west-1",instance="edge-eu-west:9080",job="edgecache-edge"'
ROUTER_A = 'instance="router-a:8081",job="edgecache-router"'
ROUTER_B = 'instance="router-b:8081",job="edgecache-router"'
EDGE_A_LABELS = {"edge": "us-east-1", "instance": "edge-us-east:9080", "job": "edgecache-edge"}
ROUTER_A_LABELS = {"instance": "router-a:8081", "job": "edgecache-router"}

SCENARIOS: list[dict[str, Any]] = [
    {
        "name": "one edge down: EdgeDown for it, not RegionDown (its neighbour is up)",
        "interval": "1m",
        "series": {
            f'edgecache_router_edge_up{{edge="us-east-1",region="us-east",{ROUTER_A}}}': "1 1 0x8",
            f'edgecache_router_edge_up{{edge="us-east-2",region="us-east",{ROUTER_A}}}': "1x10",
        },
        "checks": [
            ("EdgecacheEdgeDown", "6m", [{"edge": "us-east-1", "region": "us-east", **ROUTER_A_LABELS}]),
            ("EdgecacheRegionDown", "6m", []),
        ],
    },
    {
        "name": "every edge of a region down, as both routers see it",
        "interval": "1m",
        "series": {
            f'edgecache_router_edge_up{{edge="us-east-1",region="us-east",{ROUTER_A}}}': "0x10",
            f'edgecache_router_edge_up{{edge="us-east-1",region="us-east",{ROUTER_B}}}': "0x10",
            f'edgecache_router_edge_up{{edge="eu-west-1",region="eu-west",{ROUTER_A}}}': "1x10",
        },
        "checks": [("EdgecacheRegionDown", "5m", [{"region": "us-east"}])],
    },
    {
        "name": "scrape failures",
        "interval": "1m",
        "series": {'up{instance="edge-us-east:9080",job="edgecache-edge"}': "1 0x8",
                   'up{instance="router-a:8081",job="edgecache-router"}': "1x9"},
        "checks": [("EdgecacheEdgeScrapeDown", "5m", [{"instance": "edge-us-east:9080", "job": "edgecache-edge"}]),
                   ("EdgecacheRouterScrapeDown", "5m", [])],
    },
    {
        "name": "503s for lack of a healthy edge",
        "interval": "1m",
        "series": {f"edgecache_router_unavailable_total{{{ROUTER_A}}}": "0 0 0 5 9 9 9 9 9 9",
                   f"edgecache_router_unavailable_total{{{ROUTER_B}}}": "0x9"},
        "checks": [("EdgecacheNoHealthyEdge", "6m", [{"instance": "router-a:8081"}])],
    },
    {
        "name": "purge lag: the worst router's view, not for an edge that is down",
        "interval": "1m",
        "series": {
            f'edgecache_router_purge_lag{{edge="us-east-1",{ROUTER_A}}}': "3x10",
            f'edgecache_router_purge_lag{{edge="us-east-1",{ROUTER_B}}}': "1x10",
            f'edgecache_router_purge_lag{{edge="eu-west-1",{ROUTER_A}}}': "2x10",
            f'edgecache_router_purge_lag{{edge="ap-southeast-1",{ROUTER_A}}}': "0x10",
            f'edgecache_router_edge_up{{edge="us-east-1",region="us-east",{ROUTER_A}}}': "1x10",
            f'edgecache_router_edge_up{{edge="eu-west-1",region="eu-west",{ROUTER_A}}}': "0x10",
            f'edgecache_router_edge_up{{edge="ap-southeast-1",region="ap-southeast",{ROUTER_A}}}': "1x10",
        },
        "checks": [("EdgecachePurgeLag", "7m", [{"edge": "us-east-1"}])],
    },
    {
        "name": "purge log and control plane down",
        "interval": "1m",
        "series": {f"edgecache_router_purge_log_up{{{ROUTER_A}}}": "1 0x8",
                   f"edgecache_router_purge_log_up{{{ROUTER_B}}}": "1x9",
                   f"edgecache_control_plane_connected{{{EDGE_A}}}": "4 0x8",
                   f"edgecache_control_plane_connected{{{EDGE_B}}}": "4x9"},
        "checks": [("EdgecachePurgeLogDown", "4m", [ROUTER_A_LABELS]),
                   ("EdgecacheControlPlaneDisconnected", "5m", [EDGE_A_LABELS])],
    },
    {
        # 5-minute samples for a day and two hours. us-east-1: 90% hits until 25 h, then 20%.
        # eu-west-1: 30% all along — low, but it was low yesterday too.
        "name": "hit ratio: low now and well below yesterday's",
        "interval": "5m",
        "series": {
            f'edgecache_requests_total{{cache_status="HIT",{EDGE_A}}}': "0+2400x300 720600+600x23",
            f'edgecache_requests_total{{cache_status="REVALIDATED",{EDGE_A}}}': "0+300x323",
            f'edgecache_requests_total{{cache_status="MISS",{EDGE_A}}}': "0+300x300 92400+2400x23",
            f'edgecache_requests_total{{cache_status="HIT",{EDGE_B}}}': "0+900x323",
            f'edgecache_requests_total{{cache_status="MISS",{EDGE_B}}}': "0+2100x323",
        },
        "checks": [("EdgecacheHitRatioDrop", "25h10m", []), ("EdgecacheHitRatioDrop", "26h", [{"edge": "us-east-1"}])],
    },
    {
        "name": "5xx share above 2% on one edge",
        "interval": "1m",
        "series": {
            f'edgecache_responses_total{{code="2xx",{EDGE_A}}}': "0+570x20",
            f'edgecache_responses_total{{code="5xx",{EDGE_A}}}': "0+30x20",
            f'edgecache_responses_total{{code="2xx",{EDGE_B}}}': "0+599x20",
            f'edgecache_responses_total{{code="5xx",{EDGE_B}}}': "0+1x20",
        },
        "checks": [("Edgecache5xxRate", "12m", [{"edge": "us-east-1"}])],
    },
    {
        "name": "origin errors and an origin down",
        "interval": "1m",
        "series": {
            f'edgecache_origin_requests_total{{site="www",origin="a",{EDGE_A}}}': "0+600x20",
            f'edgecache_origin_errors_total{{site="www",origin="a",{EDGE_A}}}': "0+60x20",
            f'edgecache_origin_requests_total{{site="www",origin="b",{EDGE_A}}}': "0+600x20",
            f'edgecache_origin_errors_total{{site="www",origin="b",{EDGE_A}}}': "0+6x20",
            f'edgecache_origin_up{{site="www",origin="a",{EDGE_A}}}': "1 1 0x18",
            f'edgecache_origin_up{{site="www",origin="b",{EDGE_A}}}': "1x20",
        },
        "checks": [("EdgecacheOriginErrors", "12m", [{"edge": "us-east-1", "site": "www", "origin": "a"}]),
                   ("EdgecacheOriginDown", "6m", [{"site": "www", "origin": "a", **EDGE_A_LABELS}])],
    },
    {
        # us-east-1: disk full and evicting ~14 times its objects a day. eu-west-1: full, no
        # evictions (a warm edge whose working set fits). Memory tiers are always full: ignored.
        "name": "disk tier full and turning over",
        "interval": "1m",
        "series": {
            f'edgecache_tier_bytes{{tier="disk",{EDGE_A}}}': "990x480",
            f'edgecache_tier_capacity_bytes{{tier="disk",{EDGE_A}}}': "1000x480",
            f'edgecache_tier_objects{{tier="disk",{EDGE_A}}}': "100x480",
            f'edgecache_evictions_total{{tier="disk",{EDGE_A}}}': "0+1x480",
            f'edgecache_tier_bytes{{tier="memory",{EDGE_A}}}': "1000x480",
            f'edgecache_tier_capacity_bytes{{tier="memory",{EDGE_A}}}': "1000x480",
            f'edgecache_tier_objects{{tier="memory",{EDGE_A}}}': "10x480",
            f'edgecache_evictions_total{{tier="memory",{EDGE_A}}}': "0+10x480",
            f'edgecache_tier_bytes{{tier="disk",{EDGE_B}}}': "990x480",
            f'edgecache_tier_capacity_bytes{{tier="disk",{EDGE_B}}}': "1000x480",
            f'edgecache_tier_objects{{tier="disk",{EDGE_B}}}': "100x480",
            f'edgecache_evictions_total{{tier="disk",{EDGE_B}}}': "0x480",
        },
        "checks": [("EdgecacheDiskTierFull", "7h", [{"tier": "disk", **EDGE_A_LABELS}])],
    },
    {
        "name": "a worker fewer than usual",
        "interval": "1m",
        "series": {f"edgecache_workers_alive{{{EDGE_A}}}": "4x400 3x100",
                   f"edgecache_workers_alive{{{EDGE_B}}}": "4x500"},
        "checks": [("EdgecacheWorkersMissing", "6h45m", []), ("EdgecacheWorkersMissing", "8h", [EDGE_A_LABELS])],
    },
]


def scenario_alerts() -> dict[str, str]:
    return {rule["alert"]: rule["labels"]["severity"] for rule in alerting_rules()}


def labels_rules() -> dict[str, Any]:
    """alerts.yml with every alert's annotations replaced by `labels`: "name=value ..." of the labels they name."""
    groups = []
    for group in alert_groups():
        rules = []
        for rule in group["rules"]:
            rule = dict(rule)
            if "alert" in rule:
                names = sorted(set(LABEL_REF.findall(" ".join(map(str, rule["annotations"].values())))))
                rule["annotations"] = {"labels": " ".join(f"{name}={{{{ $labels.{name} }}}}" for name in names)}
            rules.append(rule)
        groups.append({**group, "rules": rules})
    return {"groups": groups}


def expected_alert(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    (rule,) = [rule for rule in alerting_rules() if rule["alert"] == alert]
    full = {**labels, **rule["labels"]}
    names = sorted(set(LABEL_REF.findall(" ".join(map(str, rule["annotations"].values())))))
    missing = [name for name in names if name not in full]
    assert not missing, f"{alert}'s annotations name labels its alerts do not carry: {missing}"
    return {"exp_labels": full, "exp_annotations": {"labels": " ".join(f"{name}={full[name]}" for name in names)}}


def test_scenarios_cover_the_alerts() -> None:
    tested = {alert for scenario in SCENARIOS for alert, _, _ in scenario["checks"]}
    assert tested <= set(scenario_alerts()), sorted(tested - set(scenario_alerts()))
    assert tested >= REQUIRED_ALERTS, f"no scenario for {sorted(REQUIRED_ALERTS - tested)}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario["name"])
def test_promtool_alert_scenario(scenario: dict[str, Any], tmp_path: Path) -> None:
    tool = promtool()
    yaml = yaml_module()
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(labels_rules(), sort_keys=False))
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "name": scenario["name"],
            "interval": scenario["interval"],
            "input_series": [{"series": series, "values": values} for series, values in scenario["series"].items()],
            "alert_rule_test": [
                {"eval_time": at, "alertname": alert, "exp_alerts": [expected_alert(alert, labels) for labels in alerts]}
                for alert, at, alerts in scenario["checks"]
            ],
        }],
    }  # fmt: skip
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([tool, "test", "rules", "test.yml"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, f"{scenario['name']}:\n{result.stdout}\n{result.stderr}"

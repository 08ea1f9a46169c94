"""The Grafana dashboard: a ConfigMap for Grafana's sidecar behind grafanaDashboard.enabled, holding
exactly helm/todo/dashboards/todo.json, which is what deploy/grafana/dashboard.py writes, with
every query scoped by the dashboard's variables. (deploy/observability/test_dashboard.py runs the
queries against a real Prometheus.)"""

import importlib.util
import json
import re

from conftest import CHART, REPO, by_kind, ci_values, merge, one, render

DASHBOARD = CHART / "dashboards" / "todo.json"
GENERATOR = REPO / "deploy" / "grafana" / "dashboard.py"
# What the SREs asked a row for, by the metrics it must show.
REQUIRED_METRICS = [
    "http_server_requests_total", "http_server_request_duration_seconds_bucket",
    "todo:slo_availability:error_budget_remaining30d", "todo:slo_latency:error_budget_remaining30d",
    "auth_logins_total", "auth_rate_limited_total", "auth_refreshes_total",
    "auth_refresh_reuse_detected_total", "auth_refresh_reuse_graced_total",
    "bcrypt_queue_depth", "bcrypt_queue_wait_seconds_bucket", "bcrypt_rejected_total",
    "db_pool_connections", "db_pool_max_connections", "db_pool_acquire_wait_seconds_bucket",
    "revocation_feed_age_seconds", "tasks_created_total", "tasks_completed_total",
    "tasks_deleted_total", "tasks_purged_total", "process_cpu_seconds_total",
    "process_resident_memory_bytes",
]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_the_dashboard_is_off_by_default(default_objs):
    assert by_kind(default_objs, "ConfigMap") == []


def test_the_config_map_holds_the_dashboard_with_the_sidecars_label(everything_objs):
    config_map = one(everything_objs, "ConfigMap", "todo-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Todo"}
    assert list(config_map["data"]) == ["todo.json"]
    assert config_map["data"]["todo.json"] == DASHBOARD.read_text().rstrip("\n")


def test_the_sidecar_label_is_a_value():
    # null drops the default label (Helm merges maps of values).
    labels = {"grafana_dashboard": None, "dashboards": "todo"}
    values = merge(ci_values("default"), {"grafanaDashboard": {"enabled": True, "labels": labels}})
    config_map = by_kind(render(values), "ConfigMap")[0]
    assert config_map["metadata"]["labels"]["dashboards"] == "todo"
    assert "grafana_dashboard" not in config_map["metadata"]["labels"]


def test_the_json_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("dashboard", GENERATOR)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert DASHBOARD.read_text() == generator.render(), "run: python3 deploy/grafana/dashboard.py"


def test_variables_are_datasource_namespace_and_job():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["query"]["query"] == "label_values(build_info, namespace)"
    assert variables["job"]["query"]["query"] == 'label_values(build_info{namespace="$namespace"}, job)'
    assert variables["job"]["multi"] and variables["job"]["includeAll"]


def test_every_panel_reads_the_chosen_datasource_namespace_and_jobs():
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    assert len(panels) >= 25
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            selectors = re.findall(r"\{([^}]*)\}", target["expr"])
            assert selectors, target["expr"]
            for selector in selectors:
                assert selector.startswith('namespace="$namespace", job=~"$job"'), (panel["title"], selector)


def test_every_rate_uses_the_rate_interval():
    ranges = [r for e in exprs() for r in re.findall(r"\}(\[[^\]]+\])", e)]
    assert len(ranges) > 20
    assert set(ranges) == {"[$__rate_interval]"}


def test_rows_cover_every_area_the_sres_asked_for():
    found = set(re.findall(r"[a-z_:]+[a-z0-9_]*(?=\{)", " ".join(exprs())))
    assert set(REQUIRED_METRICS) <= found, set(REQUIRED_METRICS) - found
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    assert len(rows) == 9


def test_panels_have_unique_ids_and_do_not_overlap():
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, p["title"]
        cells |= area

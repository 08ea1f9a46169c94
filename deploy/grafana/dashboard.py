"""Writes helm/todo/dashboards/todo.json, the Grafana dashboard of both services, from the rows
below: the panels live here as PromQL, the JSON is Grafana's boilerplate around them.

    python3 deploy/grafana/dashboard.py

The chart provisions the JSON (grafanaDashboard.enabled); helm/tests/test_dashboard.py fails while
it differs from what this writes, and deploy/observability/test_dashboard.py runs every query
against a real Prometheus scraping both services.
"""

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "helm" / "todo" / "dashboards" / "todo.json"

# Every query is scoped by the dashboard's variables; rates use Grafana's $__rate_interval,
# which is always at least four scrape intervals, so a rate never lands on a single sample.
S = 'namespace="$namespace", job=~"$job"'
R = "[$__rate_interval]"
API = 'route=~"/api/.+"'


def rate(metric, labels="", by=None):
    selector = f"{{{S}{', ' + labels if labels else ''}}}"
    inner = f"rate({metric}{selector}{R})"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q, metric, by, labels=""):
    return f"histogram_quantile({q}, {rate(metric + '_bucket', labels, by + ', le' if by else 'le')})"


def ts(title, unit, targets, description=""):
    return {"kind": "timeseries", "title": title, "unit": unit, "targets": targets, "description": description}


def stat(title, unit, targets, steps, description=""):
    return {"kind": "stat", "title": title, "unit": unit, "targets": targets, "steps": steps, "description": description}


# Budget left: red once spent, yellow in the last quarter.
BUDGET_STEPS = [["red", None], ["yellow", 0], ["green", 0.25]]
FIVE_XX_ONLY = API + ', status=~"5.."'
# "or 0 * all": 0 rather than no data while nothing failed.
FIVE_XX = (
    f'({rate("http_server_requests_total", FIVE_XX_ONLY, "job")}'
    f' or 0 * {rate("http_server_requests_total", API, "job")})'
    f' / {rate("http_server_requests_total", API, "job")}'
)

ROWS = [
    ("Traffic, errors and latency by route", [
        ts("Requests per second by route", "reqps",
           [(rate("http_server_requests_total", API, "job, method, route"), "{{method}} {{route}}")]),
        ts("4xx and 5xx answers per second", "reqps",
           [(rate("http_server_requests_total", 'status=~"[45].."', "job, method, route, status"),
             "{{status}} {{method}} {{route}}")],
           "Unknown paths count under route=unmatched."),
        ts("Share of 5xx answers", "percentunit", [(FIVE_XX, "{{job}}")]),
        ts("Latency p99 by route", "s",
           [(quantile(0.99, "http_server_request_duration_seconds", "job, method, route", API), "{{method}} {{route}}")]),
        ts("Latency p50 by route", "s",
           [(quantile(0.5, "http_server_request_duration_seconds", "job, method, route", API), "{{method}} {{route}}")]),
        ts("In flight and open connections", "short", [
            (f"sum by (job) (http_server_requests_in_flight{{{S}}})", "{{job}} in flight"),
            (f"sum by (job, listener) (http_server_connections{{{S}}})", "{{job}} {{listener}} connections"),
        ]),
    ]),
    ("SLOs over 30 days and error budget left (recording rules of prometheusRule)", [
        stat("Availability (non-5xx share), 30 days", "percentunit",
             [(f"1 - todo:slo_availability_errors:ratio_rate30d{{{S}}}", "{{job}}")],
             [["red", None], ["green", 0.999]]),
        stat("Availability error budget left", "percentunit",
             [(f"todo:slo_availability:error_budget_remaining30d{{{S}}}", "{{job}}")], BUDGET_STEPS),
        stat("Latency SLO: share within threshold, 30 days", "percentunit",
             [(f"1 - todo:slo_latency_errors:ratio_rate30d{{{S}}}", "{{job}} {{class}}")],
             [["red", None], ["green", 0.99]]),
        stat("Latency error budget left by class", "percentunit",
             [(f"todo:slo_latency:error_budget_remaining30d{{{S}}}", "{{job}} {{class}}")], BUDGET_STEPS),
        ts("Availability error ratio (what the burn-rate alerts read)", "percentunit", [
            (f"todo:slo_availability_errors:ratio_rate{w}{{{S}}}", "{{job}} " + w) for w in ("5m", "1h", "6h")
        ]),
        ts("Latency error ratio by class", "percentunit", [
            (f"todo:slo_latency_errors:ratio_rate{w}{{{S}}}", "{{job}} {{class}} " + w) for w in ("5m", "1h")
        ]),
    ]),
    ("Logins, failures, lockouts and rate limits", [
        ts("Logins by outcome", "ops", [(rate("auth_logins_total", by="outcome"), "{{outcome}}")]),
        ts("Registrations by outcome", "ops", [(rate("auth_registrations_total", by="outcome"), "{{outcome}}")]),
        ts("Refused with 429, by limit", "ops", [(rate("auth_rate_limited_total", by="limit"), "{{limit}}")],
           "limit=login_account is an account locked for every client (ACCOUNT_FAILED_LOGIN_LIMIT); "
           "login_account_ip one client locked out of one account."),
    ]),
    ("Refresh and reuse", [
        ts("Refreshes by outcome", "ops", [(rate("auth_refreshes_total", by="outcome"), "{{outcome}}")]),
        ts("Refresh-token reuse", "ops", [
            (rate("auth_refresh_reuse_detected_total"), "detected (session revoked)"),
            (rate("auth_refresh_reuse_graced_total"), "within the grace (pair re-issued)"),
        ]),
        ts("Logouts by outcome", "ops", [(rate("auth_logouts_total", by="outcome"), "{{outcome}}")]),
    ]),
    ("Password hashing (bcrypt)", [
        ts("Hashes waiting for a thread", "short", [(f"max by (pod) (bcrypt_queue_depth{{{S}}})", "{{pod}}")]),
        ts("Wait for a hashing thread", "s", [
            (quantile(0.99, "bcrypt_queue_wait_seconds", ""), "p99"),
            (quantile(0.5, "bcrypt_queue_wait_seconds", ""), "p50"),
        ]),
        ts("Refused with 503 (queue full)", "ops", [(rate("bcrypt_rejected_total"), "refused")]),
    ]),
    ("Database pool", [
        ts("Connections", "short", [
            (f"sum by (job, state) (db_pool_connections{{{S}}})", "{{job}} {{state}}"),
            (f"sum by (job) (db_pool_max_connections{{{S}}})", "{{job}} max"),
        ]),
        ts("Wait for a connection", "s", [
            (quantile(0.99, "db_pool_acquire_wait_seconds", "job"), "{{job}} p99"),
            (f'{rate("db_pool_acquire_wait_seconds_sum", by="job")} / {rate("db_pool_acquire_wait_seconds_count", by="job")}',
             "{{job}} mean"),
        ]),
        ts("Acquire timeouts", "ops", [(rate("db_pool_acquire_timeouts_total", by="job"), "{{job}}")]),
    ]),
    ("Revoked-sessions and deleted-accounts feeds (task-service)", [
        ts("Revoked-sessions feed age", "s", [(f"max by (pod) (revocation_feed_age_seconds{{{S}}})", "{{pod}}")],
           "Since the last successful read; the pod turns unready past REVOCATION_MAX_STALENESS_SECONDS."),
        ts("Deleted-accounts feed", "short", [
            (rate("deleted_users_poll_failures_total", by="pod"), "{{pod}} failed polls/s"),
            (f"max by (pod) (deleted_users_feed_missed{{{S}}})", "{{pod}} missed (README: missed deletions)"),
        ]),
    ]),
    ("Tasks", [
        ts("Tasks per second", "ops", [
            (rate(f"tasks_{what}_total"), what) for what in ("created", "completed", "deleted", "purged")
        ], "purged: tasks of deleted accounts."),
        ts("Requests per coalesced statement, and waiting for one", "short", [
            (f'{rate(f"task_{what}_batch_size_sum")} / {rate(f"task_{what}_batch_size_count")}', f"{what}s, mean")
            for what in ("read", "create")
        ] + [
            (f"sum(task_{what}_queue_depth{{{S}}})", f"{what}s waiting") for what in ("read", "create")
        ], "Single reads (READ_COALESCING_IN_FLIGHT) and creates (CREATE_COALESCING_IN_FLIGHT) answered "
           "per statement (mean), and queued for the next statement (all pods). A queue that stays up "
           "while the rate does not: the statements are slow (locks, the database)."),
    ]),
    ("Process", [
        ts("CPU", "percentunit", [(rate("process_cpu_seconds_total", by="job, pod"), "{{job}} {{pod}}")],
           "1 = one core."),
        ts("Resident memory", "bytes",
           [(f"sum by (job, pod) (process_resident_memory_bytes{{{S}}})", "{{job}} {{pod}}")]),
        ts("Open file descriptors", "short",
           [(f"sum by (job, pod) (process_open_fds{{{S}}})", "{{job}} {{pod}}")]),
    ]),
]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def panel_json(p, pid, grid):
    out = {
        "id": pid,
        "type": p["kind"],
        "title": p["title"],
        "description": p["description"],
        "datasource": DATASOURCE,
        "gridPos": grid,
        "fieldConfig": {"defaults": {"unit": p["unit"]}, "overrides": []},
        "targets": [
            {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i), "range": True}
            for i, (expr, legend) in enumerate(p["targets"])
        ],
    }
    if p["kind"] == "stat":
        out["fieldConfig"]["defaults"]["decimals"] = 2
        out["fieldConfig"]["defaults"]["thresholds"] = {
            "mode": "absolute", "steps": [{"color": c, "value": v} for c, v in p["steps"]]}
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "none", "textMode": "auto"}
    else:
        out["fieldConfig"]["defaults"]["custom"] = {"fillOpacity": 10, "showPoints": "never"}
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    return out


def variable(name, label, query, multi):
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": query, "refId": name}, "definition": query,
        "refresh": 2, "sort": 1, "multi": multi, "includeAll": multi, "current": {}, "options": [],
    }


def dashboard():
    panels, pid, y = [], 1, 0
    for title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        pid, y = pid + 1, y + 1
        width = 24 // min(len(row), 3)
        for i, p in enumerate(row):
            grid = {"h": 8, "w": width, "x": (i % 3) * width, "y": y + (i // 3) * 8}
            panels.append(panel_json(p, pid, grid))
            pid += 1
        y += 8 * ((len(row) + 2) // 3)
    return {
        "uid": "todo-services",
        "title": "todo: auth-service and task-service",
        "description": "RED by route, SLOs and error budget, logins and abuse limits, refresh reuse, "
                       "bcrypt, the database pool, the feeds, tasks and process. Source: deploy/grafana/dashboard.py.",
        "tags": ["todo"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "version": 1,
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "options": [], "refresh": 1, "regex": ""},
            variable("namespace", "Namespace", "label_values(build_info, namespace)", False),
            variable("job", "Job", 'label_values(build_info{namespace="$namespace"}, job)', True),
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")

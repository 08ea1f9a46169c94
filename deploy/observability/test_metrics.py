"""Metrics: each service's real exposition (after the whole scenario) passes `promtool check
metrics` and holds the families the design promises; a real Prometheus scrapes both."""

from __future__ import annotations

import re
import subprocess

import pytest
import requests

from stack import wait_until

# Series (name and a label subset) each exposition must have after the scenario, with the least
# value they must show.
EXPECTED = {
    "auth-service": [
        ('http_server_requests_total{method="POST",route="/api/v1/auth/login",status="200"}', 1),
        ('http_server_requests_total{method="POST",route="/api/v1/auth/login",status="401"}', 1),
        ('http_server_request_duration_seconds_count{method="GET",route="/api/v1/auth/me",status="200"}', 1),
        ("http_server_requests_in_flight", 0),
        ('auth_registrations_total{outcome="created"}', 1),
        ('auth_logins_total{outcome="success"}', 1),
        ("auth_refreshes_total", 1),
        ("auth_logouts_total", 1),
        ("auth_refresh_reuse_detected_total", 0),
        # Each limit's series from the start (no scenario reaches the account-wide ceiling), so
        # the first refusal shows in rate() and increase().
        ('auth_rate_limited_total{limit="login_account"}', 0),
        ('auth_rate_limited_total{limit="register_ip"}', 0),
        ("process_cpu_seconds_total", 0),
        ("process_resident_memory_bytes", 1),
        ("bcrypt_queue_wait_seconds_count", 2),
        ("bcrypt_queue_depth", 0),
        ("bcrypt_rejected_total", 0),
        ("db_pool_acquire_wait_seconds_count", 1),
        ("db_pool_acquire_timeouts_total", 0),
        ('db_pool_connections{state="idle"}', 0),
        ("db_pool_max_connections", 1),
        ("revocation_feed_age_seconds", 0),
        ('build_info{service="auth-service",version="', 1),
    ],
    "task-service": [
        ('http_server_requests_total{method="POST",route="/api/v1/tasks",status="201"}', 1),
        # The route template, never the raw path (which would be one series per task id).
        ('http_server_requests_total{method="GET",route="/api/v1/tasks/{id}",status="200"}', 1),
        ('http_server_requests_total{method="GET",route="/api/v1/tasks",status="401"}', 1),
        ("tasks_created_total", 1),
        ("tasks_completed_total", 1),
        ("tasks_deleted_total", 1),
        # Each source of a list page from the start, so a dashboard's rate() has its series.
        ('task_list_pages_total{page="kept"}', 0),
        ("task_read_queue_depth", 0),
        ("task_create_queue_depth", 0),
        ("db_pool_acquire_wait_seconds_count", 1),
        ("revocation_feed_age_seconds", 0),
        ("process_resident_memory_bytes", 1),
        ('build_info{service="task-service",version="', 1),
    ],
}


def scrape(admin: str) -> str:
    response = requests.get(f"http://{admin}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def series_value(exposition: str, prefix: str) -> float | None:
    """The value of the first sample line starting with `prefix` (labels in exposition order)."""
    name = re.match(r"[a-z_]+", prefix).group(0)
    wanted = prefix[len(name):].strip("{}").split(",") if "{" in prefix else []
    for line in exposition.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if not (series == name or series.startswith(name + "{")):
            continue
        if all(part in series for part in wanted):
            return float(value)
    return None


@pytest.mark.parametrize("service", ["auth-service", "task-service"])
def test_exposition_passes_promtool_and_has_the_promised_series(grpc_stack, service, tmp_path):
    admin = (grpc_stack.stack.auth if service == "auth-service" else grpc_stack.stack.task).admin
    exposition = scrape(admin)
    (tmp_path / "exposition.txt").write_text(exposition)
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True
    )
    assert lint.returncode == 0 and lint.stdout.strip() == "" and lint.stderr.strip() == "", (
        f"promtool on {service}:\n{lint.stdout}{lint.stderr}"
    )
    # Every family has help and a type (promtool only warns about some of this).
    families = set(re.findall(r"^# TYPE (\S+) ", exposition, re.M))
    helped = set(re.findall(r"^# HELP (\S+) \S", exposition, re.M))
    assert families and families == helped
    missing = []
    for prefix, least in EXPECTED[service]:
        value = series_value(exposition, prefix)
        if value is None or value < least:
            missing.append(f"{prefix} (want ≥ {least}, got {value})")
    assert not missing, f"{service} exposition lacks:\n" + "\n".join(missing)


def test_prometheus_scrapes_both_services(grpc_stack, prometheus):
    def both_up():
        result = prometheus.query("up")
        ups = {r["metric"]["job"]: r["value"][1] for r in result}
        return ups if ups == {"auth-service": "1", "task-service": "1"} else None

    wait_until(both_up, 30, "up == 1 for both services", interval=0.25)

    expr = 'sum(http_server_requests_total{job="task-service",route="/api/v1/tasks"})'

    def current():
        result = prometheus.query(expr)
        return float(result[0]["value"][1]) if result else None

    before = wait_until(current, 15, "task-service request counts in Prometheus", interval=0.25)
    access = grpc_stack.secrets["access_token"]
    task = grpc_stack.stack.task.api
    for _ in range(3):
        response = requests.get(
            f"http://{task}/api/v1/tasks", headers={"authorization": f"Bearer {access}"}, timeout=5
        )
        assert response.status_code in (200, 401)
    wait_until(
        lambda: (current() or 0) >= before + 3,
        15,
        f"{expr} to grow from {before} by 3",
        interval=0.25,
    )
    # The auth-service series arrive too, labelled by template and status.
    logins = prometheus.query(
        'http_server_requests_total{job="auth-service",route="/api/v1/auth/login",status="200"}'
    )
    assert logins and float(logins[0]["value"][1]) >= 1

"""ServiceMonitors scrape the admin port; the PrometheusRule has the alerts, each behind its flag."""

import re

import pytest
import yaml

from alerts_copy import COPY, chart_groups
from conftest import by_kind, ci_values, merge, render

ALERTS = {
    "errorRatio": ("TodoHighErrorRatio", ['http_server_requests_total{', 'status=~"5.."']),
    "latencyP99": ("TodoHighLatencyP99", ["histogram_quantile(0.99", "http_server_request_duration_seconds_bucket{"]),
    "loginFailureSpike": ("TodoLoginFailureSpike", ['auth_logins_total{', 'outcome="invalid_credentials"']),
    "refreshReuse": ("TodoRefreshTokenReuse", ["auth_refresh_reuse_detected_total{"]),
    "rateLimited": ("TodoRateLimited", ["auth_rate_limited_total{"]),
    "accountLoginCeiling": ("TodoAccountLoginCeiling", ['auth_rate_limited_total{', 'limit="login_account"']),
    "dbPoolSaturation": ("TodoDatabasePoolSaturated", ["db_pool_acquire_wait_seconds_sum{", 'db_pool_connections{', 'state="idle"']),
    "revocationFeedStale": ("TodoRevocationFeedStale", ["revocation_feed_age_seconds{", "> 60"]),
}


def rules(objs):
    prometheus_rules = by_kind(objs, "PrometheusRule")
    assert len(prometheus_rules) == 1
    return {r["alert"]: r for g in prometheus_rules[0]["spec"]["groups"] for r in g["rules"]}


def test_monitoring_objects_are_off_by_default(default_objs):
    assert by_kind(default_objs, "ServiceMonitor") == [] and by_kind(default_objs, "PrometheusRule") == []


def test_service_monitors_scrape_each_services_admin_port(everything_objs):
    # Which Service each monitor selects is test_admin_service's concern; here: what it scrapes.
    monitors = by_kind(everything_objs, "ServiceMonitor")
    assert len(monitors) == 2
    for monitor in monitors:
        assert monitor["spec"]["endpoints"][0]["port"] == "admin"
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_every_alert_is_present_and_watches_its_metric(everything_objs):
    found = rules(everything_objs)
    assert set(found) == {name for name, _ in ALERTS.values()}
    for name, needles in ALERTS.values():
        for needle in needles:
            assert needle in found[name]["expr"], (name, needle)
        assert found[name]["labels"]["severity"] in {"critical", "warning", "info"}
        assert found[name]["labels"]["team"] == "todo"
        assert found[name]["annotations"]["summary"].count("{{") >= 1  # Prometheus templating survives Helm


def test_alerts_are_scoped_to_the_release(everything_objs):
    for name, rule in rules(everything_objs).items():
        selectors = re.findall(r"\{([^}]*)\}", rule["expr"])
        metric_selectors = [s for s in selectors if "job" in s or "namespace" in s]
        assert metric_selectors, name
        for s in metric_selectors:
            assert 'namespace="todo"' in s and "job" in s, (name, s)


@pytest.mark.parametrize("flag", sorted(ALERTS))
def test_each_alert_has_its_own_flag(flag):
    values = merge(ci_values("everything"), {"prometheusRule": {"alerts": {flag: {"enabled": False}}}})
    found = rules(render(values))
    assert ALERTS[flag][0] not in found
    assert len(found) == len(ALERTS) - 1


def test_thresholds_come_from_values():
    values = merge(ci_values("everything"), {"prometheusRule": {"alerts": {"revocationFeedStale": {"thresholdSeconds": 90}}}})
    assert rules(render(values))["TodoRevocationFeedStale"]["expr"].rstrip().endswith("> 90")


def test_the_deploy_copy_matches_the_chart():
    copy = yaml.safe_load(COPY.read_text())
    assert copy["groups"] == chart_groups()

"""ServiceMonitors scrape the admin port; the PrometheusRule has the SLO recording rules and the
alerts, each behind its flag, each with a runbook in docs/runbooks.md."""

import re

import pytest
import yaml

from alerts_copy import COPY, chart_groups
from conftest import REPO, by_kind, ci_values, merge, one, render

ALERTS = {
    "availabilityFastBurn": ("TodoAvailabilityFastBurn", ["todo:slo_availability_errors:ratio_rate1h{", "todo:slo_availability_errors:ratio_rate5m{", "> 14.4"]),
    "availabilitySlowBurn": ("TodoAvailabilitySlowBurn", ["todo:slo_availability_errors:ratio_rate6h{", "todo:slo_availability_errors:ratio_rate30m{", "> 6"]),
    "latencyFastBurn": ("TodoLatencyFastBurn", ["todo:slo_latency_errors:ratio_rate1h{", "todo:slo_latency_errors:ratio_rate5m{", "> 14.4"]),
    "latencySlowBurn": ("TodoLatencySlowBurn", ["todo:slo_latency_errors:ratio_rate6h{", "todo:slo_latency_errors:ratio_rate30m{", "> 6"]),
    "errorRatio": ("TodoHighErrorRatio", ['http_server_requests_total{', 'status=~"5.."']),
    "latencyP99": ("TodoHighLatencyP99", ["histogram_quantile(0.99", "http_server_request_duration_seconds_bucket{"]),
    "loginFailureSpike": ("TodoLoginFailureSpike", ['auth_logins_total{', 'outcome="invalid_credentials"']),
    "refreshReuse": ("TodoRefreshTokenReuse", ["auth_refresh_reuse_detected_total{"]),
    "rateLimited": ("TodoRateLimited", ["auth_rate_limited_total{"]),
    "accountLoginCeiling": ("TodoAccountLoginCeiling", ['auth_rate_limited_total{', 'limit="login_account"']),
    "dbPoolSaturation": ("TodoDatabasePoolSaturated", ["db_pool_acquire_wait_seconds_sum{", 'db_pool_connections{', 'state="idle"']),
    "bcryptRefusals": ("TodoBcryptRefusals", ["bcrypt_rejected_total{"]),
    "revocationFeedStale": ("TodoRevocationFeedStale", ["revocation_feed_age_seconds{", "> 60"]),
    "deletedUsersMissed": ("TodoDeletedUsersMissed", ["deleted_users_feed_missed{", "> 0"]),
    "deletedUsersPurgeFailing": ("TodoDeletedUsersPurgeFailing", ["deleted_users_poll_failures_total{", "> 0"]),
}
RUNBOOKS = REPO / "docs" / "runbooks.md"
WINDOWS = ("5m", "30m", "1h", "6h", "30d")


def rule_list(objs):
    prometheus_rules = by_kind(objs, "PrometheusRule")
    assert len(prometheus_rules) == 1
    return [r for g in prometheus_rules[0]["spec"]["groups"] for r in g["rules"]]


def rules(objs):
    """{alert name: rule} of the alerting rules."""
    return {r["alert"]: r for r in rule_list(objs) if "alert" in r}


def records(objs):
    """[(recorded name, class label or None, expr)] of the recording rules."""
    return [(r["record"], r.get("labels", {}).get("class"), r["expr"]) for r in rule_list(objs) if "record" in r]


def record_expr(objs, name, cls=None):
    found = [e for n, c, e in records(objs) if n == name and c == cls]
    assert len(found) == 1, (name, cls)
    return found[0]


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
        annotations = found[name]["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["summary"].count("{{") >= 1  # Prometheus templating survives Helm
        assert len(annotations["description"]) > 80, name


def test_burn_rate_alerts_page_fast_and_ticket_slow(everything_objs):
    found = rules(everything_objs)
    for slo in ("Availability", "Latency"):
        assert found[f"Todo{slo}FastBurn"]["labels"]["severity"] == "critical"
        assert found[f"Todo{slo}SlowBurn"]["labels"]["severity"] == "warning"
        # Both windows of a pair must agree: the long one proves it matters, the short one that
        # it is still happening.
        assert found[f"Todo{slo}FastBurn"]["expr"].split().count("and") == 1


def test_alerts_and_records_are_scoped_to_the_release(everything_objs):
    exprs = [(name, r["expr"]) for name, r in rules(everything_objs).items()]
    exprs += [(name, expr) for name, _, expr in records(everything_objs)]
    for name, expr in exprs:
        selectors = re.findall(r"\{([^}]*)\}", expr)
        metric_selectors = [s for s in selectors if "job" in s or "namespace" in s]
        assert metric_selectors, name
        assert len(metric_selectors) == expr.count("{"), (name, expr)
        for s in metric_selectors:
            assert 'namespace="todo"' in s and "job" in s, (name, s)


def test_alerts_select_the_jobs_the_service_monitors_scrape(everything_objs):
    # A ServiceMonitor's series get job=<the Service it selected>: the admin Services here.
    services = by_kind(everything_objs, "Service")
    scraped = set()
    for monitor in by_kind(everything_objs, "ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        scraped |= {s["metadata"]["name"] for s in services if wanted <= s["metadata"]["labels"].items()}
    assert scraped == {"todo-auth-admin", "todo-task-admin"}
    jobs = set()
    for expr in [r["expr"] for r in rules(everything_objs).values()] + [e for _, _, e in records(everything_objs)]:
        for match in re.findall(r'job=~?"([^"]*)"', expr):
            jobs |= set(match.split("|"))
    assert jobs == scraped


def test_slo_error_ratios_are_recorded_over_every_window_and_class(everything_objs):
    names = {(name, cls) for name, cls, _ in records(everything_objs)}
    for window in WINDOWS:
        assert (f"todo:slo_availability_errors:ratio_rate{window}", None) in names
        for cls in ("read", "write", "login"):
            assert (f"todo:slo_latency_errors:ratio_rate{window}", cls) in names
    assert ("todo:slo_availability:error_budget_remaining30d", None) in names
    assert ("todo:slo_latency:error_budget_remaining30d", None) in names
    groups = by_kind(everything_objs, "PrometheusRule")[0]["spec"]["groups"]
    budget = next(g for g in groups if g["name"].endswith(".slo-budget"))
    # A 30-day rate every 5 minutes, not at every evaluation.
    assert budget["interval"] == "5m"
    assert all("30d" in (r.get("record") or "") for r in budget["rules"])


def test_the_slis_count_api_routes_only_and_5xx_as_errors(everything_objs):
    availability = record_expr(everything_objs, "todo:slo_availability_errors:ratio_rate5m")
    assert availability.count('route=~"/api/.+"') == 3
    assert 'status=~"5.."' in availability and "or 0 *" in availability
    login = record_expr(everything_objs, "todo:slo_latency_errors:ratio_rate5m", "login")
    write = record_expr(everything_objs, "todo:slo_latency_errors:ratio_rate5m", "write")
    password_routes = '"/api/v1/auth/(login|register|password|me)"'
    assert f"route=~{password_routes}" in login and f"route!~{password_routes}" in write


def test_slo_objectives_and_thresholds_come_from_values():
    values = merge(ci_values("everything"), {"prometheusRule": {"slo": {
        "availability": {"objective": 0.995},
        "latency": {"objective": 0.98, "readSeconds": 0.25, "writeSeconds": 0.5, "loginSeconds": 5}}}})
    objs = render(values)
    found = rules(objs)
    assert found["TodoAvailabilityFastBurn"]["expr"].count("/ (1 - 0.995) > 14.4") == 2
    assert found["TodoLatencySlowBurn"]["expr"].count("/ (1 - 0.98) > 6") == 2
    assert 'le="0.25"' in record_expr(objs, "todo:slo_latency_errors:ratio_rate1h", "read")
    assert 'le="0.5"' in record_expr(objs, "todo:slo_latency_errors:ratio_rate1h", "write")
    # An integer bound: Prometheus 2 stores le="5", Prometheus 3 le="5.0"; both match.
    assert 'le=~"5(\\\\.0)?"' in record_expr(objs, "todo:slo_latency_errors:ratio_rate1h", "login")
    assert "/ (1 - 0.98)" in record_expr(objs, "todo:slo_latency:error_budget_remaining30d")


@pytest.mark.parametrize("seconds", [0.3, 20])
def test_a_latency_threshold_must_be_a_bucket_bound(seconds):
    import helm_python
    with pytest.raises(helm_python.HelmValuesError):
        render(merge(ci_values("everything"), {"prometheusRule": {"slo": {"latency": {"readSeconds": seconds}}}}))


def github_anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """{anchor: body} of each `## ` section of docs/runbooks.md."""
    parts = re.split(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.M)
    return {github_anchor(title): body for title, body in zip(parts[1::2], parts[2::2])}


def test_every_runbook_url_points_at_a_section_of_docs_runbooks():
    base = "https://git.example.com/ops/todo/-/blob/main/docs/runbooks.md"
    objs = render(merge(ci_values("everything"), {"prometheusRule": {"runbookBaseUrl": base}}))
    sections = runbook_sections()
    for name, rule in rules(objs).items():
        url, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert url == base, name
        assert anchor == name.lower() and anchor in sections, name
        # What it means, how to confirm it, what to do.
        for part in ("**Means.**", "**Confirm.**", "**Do.**"):
            assert part in sections[anchor], (name, part)
    # No runbook for an alert that does not exist.
    assert set(sections) == {name.lower() for name in rules(objs)}


def test_every_runbook_link_inside_the_runbooks_resolves():
    anchors = set(runbook_sections())
    links = re.findall(r"\]\(#([^)]+)\)", RUNBOOKS.read_text())
    assert links and set(links) <= anchors


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

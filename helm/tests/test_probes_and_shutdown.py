"""Distinct startup, liveness and readiness probes on the admin port; a grace period that covers the drain."""

import pytest

from conftest import by_kind, ci_values, container, env, merge, render


@pytest.mark.parametrize("component", ["auth-service", "task-service"])
def test_the_three_probes_differ_and_use_the_admin_port(default_objs, component):
    deployment = next(d for d in by_kind(default_objs, "Deployment") if d["metadata"]["name"].endswith(component))
    c = container(deployment)
    startup, liveness, readiness = c["startupProbe"], c["livenessProbe"], c["readinessProbe"]
    assert startup != liveness and liveness != readiness and startup != readiness
    for probe in (startup, liveness, readiness):
        assert probe["httpGet"]["port"] == "admin"
    assert liveness["httpGet"]["path"] == "/healthz"
    assert readiness["httpGet"]["path"] == "/readyz"
    assert startup["httpGet"]["path"] == "/healthz"
    # Startup allows a slow start before liveness takes over.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30
    admin = next(p for p in c["ports"] if p["name"] == "admin")
    assert admin["containerPort"] == 9000


def grace_and_shutdown(objs):
    for deployment in by_kind(objs, "Deployment"):
        e = env(deployment)
        yield (
            deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
            int(e["SHUTDOWN_DELAY_SECONDS"]["value"]),
            int(e["SHUTDOWN_TIMEOUT_SECONDS"]["value"]),
        )


# (grace, delay, timeout) each Deployment gets: a delay of 0 stays 0 (not Helm's `default`), and
# the margin is the value's.
@pytest.mark.parametrize("shutdown, expected", [
    ({}, (30, 5, 20)),
    ({"delaySeconds": 10, "timeoutSeconds": 45}, (60, 10, 45)),
    ({"delaySeconds": 0, "graceMarginSeconds": 15}, (35, 0, 20)),
], ids=["defaults", "longer", "no-delay-wider-margin"])
def test_grace_period_covers_delay_plus_timeout_plus_the_margin(shutdown, expected):
    objs = render(merge(ci_values("default"), {"shutdown": shutdown}))
    seen = list(grace_and_shutdown(objs))
    assert seen == [expected, expected]
    for grace, delay, timeout in seen:
        assert grace >= delay + timeout + 5


def test_default_shutdown_matches_the_services_defaults(default_objs):
    assert list(grace_and_shutdown(default_objs)) == [(30, 5, 20), (30, 5, 20)]


def test_no_prestop_hook_needs_a_sleep_binary(everything_objs):
    # The image has no shell or sleep; the services' own SHUTDOWN_DELAY_SECONDS is the pause.
    for deployment in by_kind(everything_objs, "Deployment"):
        lifecycle = container(deployment).get("lifecycle", {})
        assert "preStop" not in lifecycle


def test_rollouts_never_drop_below_the_desired_count(default_objs):
    for deployment in by_kind(default_objs, "Deployment"):
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

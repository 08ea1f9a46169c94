"""With the Ingress on, the chart never silently lets every client share the controller's IP for the limits."""

import helm_python
import pytest

from conftest import ci_values, component_name, env, merge, notes, one, render

NO_PROXIES = merge(ci_values("default"), {"auth": {"trustedProxies": []}})


def auth_env(objs, fullname="rel-todo"):
    return env(one(objs, "Deployment", component_name("auth", fullname)))


def test_the_ingress_without_trusted_proxies_refuses_to_render():
    with pytest.raises(helm_python.HelmError, match=r"auth\.trustedProxies is empty while ingress\.enabled") as e:
        render(NO_PROXIES)
    # The message says what to do, including the explicit way out.
    assert "[none]" in str(e.value) and "helm/README.md" in str(e.value)


@pytest.mark.parametrize("values", [ci_values("existing-secret"), merge(NO_PROXIES, {"ingress": {"enabled": False}})],
                         ids=["existing-secret", "default-without-ingress"])
def test_without_the_ingress_empty_trusted_proxies_render_and_stay_unset(values):
    assert "TRUSTED_PROXIES" not in auth_env(render(values))


def test_none_is_the_explicit_no_proxy_value():
    values = merge(ci_values("default"), {"auth": {"trustedProxies": ["none"]}})
    objs = render(values)
    # auth-service parses every comma-separated entry as a CIDR: "none" must never reach it.
    assert "TRUSTED_PROXIES" not in auth_env(objs)
    text = notes(values)
    assert "WARNING: auth.trustedProxies is [none]" in text
    assert "ALL clients share one IP" in text


@pytest.mark.parametrize("proxies, expected", [
    (["10.0.0.0/8"], "10.0.0.0/8"),
    (["10.0.0.0/8", "fd00::/8"], "10.0.0.0/8,fd00::/8"),
    (["130.211.0.0/22", "35.191.0.0/16", "34.120.0.7/32"], "130.211.0.0/22,35.191.0.0/16,34.120.0.7/32"),
])
def test_trusted_proxies_reach_auth_service_joined_with_commas(proxies, expected):
    objs = render(merge(ci_values("default"), {"auth": {"trustedProxies": proxies}}))
    assert auth_env(objs)["TRUSTED_PROXIES"] == {"name": "TRUSTED_PROXIES", "value": expected}
    assert "TRUSTED_PROXIES" not in env(one(objs, "Deployment", component_name("task")))


@pytest.mark.parametrize("bad", [["none", "10.0.0.0/8"], ["none", "none"], ["None"], ["10.0.0.0"], ["nonsense"]],
                         ids=["none-with-cidr", "none-twice", "capital-None", "no-prefix", "nonsense"])
def test_the_schema_takes_cidrs_or_exactly_none(bad):
    with pytest.raises(helm_python.HelmValuesError):
        render(merge(ci_values("default"), {"auth": {"trustedProxies": bad}}))


def test_notes_say_what_to_trust_per_controller():
    text = notes(ci_values("everything"))
    assert "believes X-Forwarded-For only from 10.244.0.0/16" in text
    assert "rightmost entry outside that list" in text
    for needle in ("ingress-nginx", "externalTrafficPolicy=Local", "compute-full-forwarded-for",
                   "Traefik", "forwardedHeaders.trustedIPs", "AWS ALB", "GKE Ingress",
                   "130.211.0.0/22, 35.191.0.0/16"):
        assert needle in text, needle
    assert "WARNING" not in text


def test_notes_say_nothing_about_proxies_without_the_ingress():
    assert "X-Forwarded-For" not in notes(ci_values("existing-secret"))

"""NetworkPolicies admit only the ingress controller, Prometheus and task-service, and reach only what is needed."""

from urllib.parse import urlsplit

import helm_python
import pytest

from conftest import by_kind, ci_values, merge, one, render

INGRESS_CONTROLLER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
}
PROMETHEUS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


def policies(objs):
    return {p["metadata"]["name"]: p["spec"] for p in by_kind(objs, "NetworkPolicy")}


def ports_from(spec, peer):
    return [[p["port"] for p in rule["ports"]] for rule in spec["ingress"] if peer in rule["from"]]


def test_off_by_default(default_objs):
    assert policies(default_objs) == {}


def test_each_policy_selects_its_deployments_pods(everything_objs):
    pols = policies(everything_objs)
    assert set(pols) == {"todo-auth-service", "todo-task-service"}
    for name, spec in pols.items():
        deployment = one(everything_objs, "Deployment", name)
        assert spec["podSelector"] == deployment["spec"]["selector"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]


def test_ingress_controller_reaches_only_the_api_port_and_prometheus_only_admin(everything_objs):
    for spec in policies(everything_objs).values():
        assert ports_from(spec, INGRESS_CONTROLLER) == [["http"]]
        assert ports_from(spec, PROMETHEUS) == [["admin"]]


def test_task_service_may_reach_auth_services_admin_port(everything_objs):
    pols = policies(everything_objs)
    task_pods = {"podSelector": {"matchLabels": one(everything_objs, "Deployment", "todo-task-service")["spec"]["selector"]["matchLabels"]}}
    auth_pods = {"podSelector": {"matchLabels": one(everything_objs, "Deployment", "todo-auth-service")["spec"]["selector"]["matchLabels"]}}
    assert ports_from(pols["todo-auth-service"], task_pods) == [["admin"]]
    assert ports_from(pols["todo-task-service"], task_pods) == []
    egress = [r for r in pols["todo-task-service"]["egress"] if auth_pods in r["to"]]
    assert [[p["port"] for p in r["ports"]] for r in egress] == [[9000]]
    assert not [r for r in pols["todo-auth-service"]["egress"] if task_pods in r["to"]]


def test_the_helm_test_pod_may_reach_the_admin_ports(everything_objs):
    test_pod = by_kind(everything_objs, "Pod")[0]
    for spec in policies(everything_objs).values():
        admitted = [r for r in spec["ingress"]
                    if any(p.get("podSelector", {}).get("matchLabels", {}).items() <= test_pod["metadata"]["labels"].items()
                           and "namespaceSelector" not in p for p in r["from"])
                    and r["ports"] == [{"port": "admin", "protocol": "TCP"}]]
        assert admitted


def test_egress_is_dns_database_and_otlp(everything_objs):
    for spec in policies(everything_objs).values():
        egress = spec["egress"]
        dns = [r for r in egress if {p["port"] for p in r["ports"]} == {53}]
        assert {p["protocol"] for p in dns[0]["ports"]} == {"UDP", "TCP"}
        database = [r for r in egress if r["to"] == [{"ipBlock": {"cidr": "10.10.0.0/24"}}]]
        assert [p["port"] for p in database[0]["ports"]] == [5432, 6432]
        otlp = [r for r in egress if r["to"][0].get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "otel-collector"}]
        assert [p["port"] for p in otlp[0]["ports"]] == [4317, 4318]
        # Nothing else: no rule without a destination (which would allow everything).
        assert all(r.get("to") for r in egress)


def test_selectors_come_from_values():
    values = merge(ci_values("everything"), {"networkPolicy": {"ingressController": {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}}}}})
    spec = policies(render(values))["todo-auth-service"]
    assert spec["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "traefik"}


@pytest.mark.parametrize("missing, message", [
    ({"database": {"cidrs": []}}, "networkPolicy.database.cidrs"),
    ({"otlp": {"to": []}}, "networkPolicy.otlp.to"),
])
def test_incomplete_policy_values_are_refused(missing, message):
    with pytest.raises(helm_python.HelmError, match=message):
        render(merge(ci_values("everything"), {"networkPolicy": missing}))


def test_load_balancers_that_reach_pods_directly_are_admitted_to_the_api_port_only(everything_objs):
    for spec in policies(everything_objs).values():
        for cidr in ("35.191.0.0/16", "130.211.0.0/22"):
            assert ports_from(spec, {"ipBlock": {"cidr": cidr}}) == [["http"]], cidr


def test_every_database_url_port_is_allowed(everything_objs):
    # The services' URLs (PgBouncer) and the migrations' (the server) may use different ports.
    values = ci_values("everything")
    urls = [values["secrets"]["database"][c]["url"] for c in ("auth", "task")]
    ports = {urlsplit(url).port for url in urls}
    for spec in policies(everything_objs).values():
        allowed = {p["port"] for r in spec["egress"] if r["to"] == [{"ipBlock": {"cidr": "10.10.0.0/24"}}] for p in r["ports"]}
        assert ports <= allowed, (ports, allowed)

"""The admin port (metrics, readiness, the revoked-sessions feed) is only ever on a ClusterIP Service of its own."""

import pytest

from conftest import by_kind, ci_values, component_name, container, env, merge, one, render

EXPOSED_TYPES = ("NodePort", "LoadBalancer")


def admin_name(component, fullname="rel-todo"):
    return f"{fullname}-{component}-admin"


def with_service_type(service_type):
    return render(merge(ci_values("everything"), {
        "auth": {"service": {"type": service_type}}, "task": {"service": {"type": service_type}}}))


def selects(service, workload):
    """Whether the Service routes to the workload's pods."""
    return service["spec"]["selector"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("service_type", EXPOSED_TYPES)
def test_no_exposed_service_carries_the_admin_port(service_type):
    objs = with_service_type(service_type)
    exposed = [s for s in by_kind(objs, "Service") if s["spec"].get("type", "ClusterIP") != "ClusterIP"]
    assert {s["metadata"]["name"] for s in exposed} == {"todo-auth-service", "todo-task-service"}
    for service in exposed:
        assert service["spec"]["type"] == service_type
        for port in service["spec"]["ports"]:
            assert port["port"] != 9000 and port["name"] != "admin", service["metadata"]["name"]
            assert port["targetPort"] not in (9000, "admin"), service["metadata"]["name"]
            assert "nodePort" not in port or port["targetPort"] == "http"


@pytest.mark.parametrize("service_type", ("ClusterIP",) + EXPOSED_TYPES)
@pytest.mark.parametrize("component", ["auth", "task"])
def test_each_service_has_a_cluster_ip_admin_service(service_type, component):
    objs = with_service_type(service_type)
    admin = one(objs, "Service", admin_name(component, "todo"))
    assert admin["spec"]["type"] == "ClusterIP"
    assert admin["spec"]["ports"] == [{"name": "admin", "port": 9000, "targetPort": "admin", "protocol": "TCP"}]
    deployment = one(objs, "Deployment", component_name(component, "todo"))
    assert selects(admin, deployment)
    assert {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}["admin"] == 9000
    # Exactly one Service per component has the admin port: this one.
    with_admin = [s["metadata"]["name"] for s in by_kind(objs, "Service")
                  if selects(s, deployment) and any(p["name"] == "admin" for p in s["spec"]["ports"])]
    assert with_admin == [admin_name(component, "todo")]


def test_no_value_can_change_the_admin_services_type():
    # The schema has no such knob: it rejects anything but the API Service's own keys.
    import helm_python
    with pytest.raises(helm_python.HelmValuesError, match="additional propert"):
        render(merge(ci_values("default"), {"auth": {"service": {"adminType": "LoadBalancer"}}}))


@pytest.mark.parametrize("component", ["auth", "task"])
def test_the_api_service_carries_only_the_api_port(default_objs, component):
    api = one(default_objs, "Service", component_name(component))
    assert api["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]


@pytest.mark.parametrize("component", ["auth", "task"])
def test_the_service_monitor_selects_only_the_admin_service(everything_objs, component):
    monitor = one(everything_objs, "ServiceMonitor", component_name(component, "todo"))
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [s["metadata"]["name"] for s in by_kind(everything_objs, "Service")
                if wanted.items() <= s["metadata"]["labels"].items()]
    assert selected == [admin_name(component, "todo")]
    assert monitor["spec"]["endpoints"][0]["port"] == "admin"


def test_task_service_polls_the_auth_admin_service(default_objs):
    url = env(one(default_objs, "Deployment", component_name("task")))["AUTH_ADMIN_URL"]["value"]
    auth_admin = one(default_objs, "Service", admin_name("auth"))
    assert url == f"http://{auth_admin['metadata']['name']}:{auth_admin['spec']['ports'][0]['port']}"
    assert selects(auth_admin, one(default_objs, "Deployment", component_name("auth")))


def test_network_policies_admit_task_service_and_prometheus_to_the_admin_services_target(everything_objs):
    # A Service rewrites the destination to the pod's port, which is what NetworkPolicies match.
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(everything_objs, "NetworkPolicy")}
    task_pods = one(everything_objs, "Deployment", "todo-task-service")["spec"]["selector"]["matchLabels"]
    auth_pods = one(everything_objs, "Deployment", "todo-auth-service")["spec"]["selector"]["matchLabels"]
    target = one(everything_objs, "Service", "todo-auth-admin")["spec"]["ports"][0]["targetPort"]
    task_in = [r for r in policies["todo-auth-service"]["ingress"] if {"podSelector": {"matchLabels": task_pods}} in r["from"]]
    assert [p["port"] for r in task_in for p in r["ports"]] == [target]
    task_out = [r for r in policies["todo-task-service"]["egress"] if {"podSelector": {"matchLabels": auth_pods}} in r["to"]]
    assert [p["port"] for r in task_out for p in r["ports"]] == [9000]
    for name, spec in policies.items():
        prometheus = [r for r in spec["ingress"] if any("namespaceSelector" in f and f["namespaceSelector"]["matchLabels"]
                      == {"kubernetes.io/metadata.name": "monitoring"} for f in r["from"])]
        assert [p["port"] for r in prometheus for p in r["ports"]] == [target], name

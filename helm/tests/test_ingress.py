"""The Ingress routes /api/v1/auth to auth-service and /api/v1/tasks to task-service, on their API port."""

import helm_python
import pytest

from conftest import by_kind, ci_values, component_name, container, merge, one, render


def route_targets(objs):
    ingress = by_kind(objs, "Ingress")
    assert len(ingress) == 1
    paths = ingress[0]["spec"]["rules"][0]["http"]["paths"]
    return {p["path"]: (p["pathType"], p["backend"]["service"]["name"], p["backend"]["service"]["port"]) for p in paths}


def test_paths_reach_the_right_service_and_port(default_objs):
    assert route_targets(default_objs) == {
        "/api/v1/auth": ("Prefix", component_name("auth"), {"name": "http"}),
        "/api/v1/tasks": ("Prefix", component_name("task"), {"name": "http"}),
    }


@pytest.mark.parametrize("component", ["auth", "task"])
def test_the_routed_service_port_reaches_the_api_container_port(default_objs, component):
    name = component_name(component)
    service = one(default_objs, "Service", name)
    http = next(p for p in service["spec"]["ports"] if p["name"] == "http")
    assert (http["port"], http["targetPort"]) == (8080, "http")
    deployment = one(default_objs, "Deployment", name)
    # The Service selects exactly this Deployment's pods...
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # ...and its targetPort names the container's 8080.
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert ports == {"http": 8080, "admin": 9000}
    assert container(deployment)["command"] == [f"{component}-service", "serve"]


def test_the_admin_port_is_never_routed(everything_objs):
    for _, _, port in route_targets(everything_objs).values():
        assert port == {"name": "http"}


def test_class_host_tls_and_annotations_come_from_values(everything_objs):
    ingress = by_kind(everything_objs, "Ingress")[0]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["rules"][0]["host"] == "todo.example.com"
    assert ingress["spec"]["tls"] == [{"hosts": ["todo.example.com"], "secretName": "todo-example-com-tls"}]
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert set(route_targets(everything_objs)) == {"/api/v1/auth", "/api/v1/tasks"}


def test_tls_without_a_host_is_refused():
    values = merge(ci_values("default"), {"ingress": {"tls": {"enabled": True, "secretName": "x"}}})
    with pytest.raises(helm_python.HelmError, match="ingress.tls.enabled needs ingress.host"):
        render(values)


def test_ingress_can_be_turned_off():
    assert by_kind(render(ci_values("existing-secret")), "Ingress") == []

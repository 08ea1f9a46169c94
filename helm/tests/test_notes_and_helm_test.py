"""NOTES.txt names the Services; the `helm test` pod checks both services' /healthz on their admin Services."""

from conftest import by_kind, ci_values, component_name, merge, notes, render


def test_notes_name_the_api_and_admin_services():
    text = notes(ci_values("default"))
    for component in ("auth", "task"):
        assert f"Service {component_name(component)} (API 8080, ClusterIP)" in text
        assert f"Service rel-todo-{component}-admin (admin 9000, ClusterIP)" in text


def test_helm_test_pod_fetches_both_healthz_on_the_admin_services(default_objs):
    pods = by_kind(default_objs, "Pod")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = " ".join(pod["spec"]["containers"][0]["command"])
    services = {s["metadata"]["name"]: s for s in by_kind(default_objs, "Service")}
    for component in ("auth", "task"):
        admin = f"rel-todo-{component}-admin"
        assert f"http://{admin}:9000/healthz" in script
        # The name it fetches is a Service that really has that port.
        assert [p["port"] for p in services[admin]["spec"]["ports"]] == [9000]
    assert pod["spec"]["restartPolicy"] == "Never"


def test_helm_test_pod_can_be_turned_off():
    assert by_kind(render(merge(ci_values("default"), {"tests": {"enabled": False}})), "Pod") == []


def test_notes_warn_when_the_ingress_serves_plain_http():
    plain = notes(ci_values("default"))
    assert "WARNING: the Ingress serves plain HTTP" in plain
    assert "http://<ingress address>/api/v1/auth/" in plain
    tls = notes(
        merge(
            ci_values("default"),
            {"ingress": {"host": "todo.example.com", "tls": {"enabled": True, "secretName": "todo-tls"}}},
        )
    )
    assert "plain HTTP" not in tls
    assert "https://todo.example.com/api/v1/auth/" in tls

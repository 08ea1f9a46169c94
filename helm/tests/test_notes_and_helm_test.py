"""NOTES.txt warns about trustedProxies; the `helm test` pod checks both services' /healthz."""

from conftest import by_kind, ci_values, component_name, merge, notes


def test_notes_warn_that_without_trusted_proxies_all_clients_share_one_ip():
    text = notes(ci_values("default"))
    assert "auth.trustedProxies is empty" in text
    assert "ingress controller's pod CIDR" in text
    assert "share one IP" in text


def test_notes_stop_warning_once_trusted_proxies_are_set():
    text = notes(ci_values("everything"))
    assert "is empty" not in text
    assert "10.244.0.0/16" in text and "share one IP" in text


def test_helm_test_pod_fetches_both_healthz_on_the_admin_port(default_objs):
    pods = by_kind(default_objs, "Pod")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = " ".join(pod["spec"]["containers"][0]["command"])
    for component in ("auth", "task"):
        assert f"http://{component_name(component)}:9000/healthz" in script
    assert pod["spec"]["restartPolicy"] == "Never"


def test_helm_test_pod_can_be_turned_off():
    from conftest import render
    assert by_kind(render(merge(ci_values("default"), {"tests": {"enabled": False}})), "Pod") == []

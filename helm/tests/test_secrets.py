"""Both services read one JWT key ring from one Secret key; existingSecret replaces the chart's Secret."""

import pytest

from conftest import by_kind, ci_values, component_name, env, merge, one, render, secret_value


def secret_ref(workload, var):
    return env(workload)[var]["valueFrom"]["secretKeyRef"]


@pytest.mark.parametrize("case_name", ["default", "existing-secret", "everything"])
def test_both_services_read_jwt_keys_from_the_same_secret_key(case_name):
    objs = render(ci_values(case_name))
    refs = [secret_ref(one(objs, "Deployment", component_name(c, "todo" if case_name == "everything" else "rel-todo")), "JWT_KEYS")
            for c in ("auth", "task")]
    assert refs[0] == refs[1]
    assert refs[0]["key"] == "jwt-keys"
    assert "optional" not in refs[0]
    if case_name == "existing-secret":
        assert refs[0]["name"] == "todo-operator-secrets"
    else:
        assert one(objs, "Secret", refs[0]["name"])["data"]["jwt-keys"]


def test_the_key_ring_keeps_its_order_so_the_first_key_signs(everything_objs):
    name = secret_ref(one(everything_objs, "Deployment", "todo-auth-service"), "JWT_KEYS")["name"]
    ring = secret_value(one(everything_objs, "Secret", name), "jwt-keys")
    assert ring == "2025-02:new-signing-key-ci-only-0123456789abcdef,2025-01:old-verifying-key-ci-only-0123456789abcdef"
    assert "JWT_SECRET" not in env(one(everything_objs, "Deployment", "todo-auth-service"))


@pytest.mark.parametrize("component", ["auth", "task"])
def test_each_service_reads_its_own_database_url(default_objs, component):
    deployment = one(default_objs, "Deployment", component_name(component))
    ref = secret_ref(deployment, "DATABASE_URL")
    secret = one(default_objs, "Secret", ref["name"])
    assert secret_value(secret, ref["key"]) == f"postgres://{component}:ci@postgres:5432/todo"


def test_existing_secret_means_no_chart_secret():
    objs = render(ci_values("existing-secret"))
    assert by_kind(objs, "Secret") == []
    for deployment in by_kind(objs, "Deployment"):
        for var in ("DATABASE_URL", "JWT_KEYS"):
            assert secret_ref(deployment, var)["name"] == "todo-operator-secrets"
        # Nothing to hash: the operator's Secret is not in the chart.
        assert "checksum/secret" not in (deployment["spec"]["template"]["metadata"].get("annotations") or {})


def test_a_secret_change_rolls_the_pods_and_nothing_else_does():
    base = ci_values("default")
    rotated = merge(base, {"secrets": {"jwtKeys": [{"kid": "new", "secret": "n" * 40}] + base["secrets"]["jwtKeys"]}})
    replicas = merge(base, {"auth": {"replicaCount": 5}})

    def checksums(values):
        return [d["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
                for d in by_kind(render(values), "Deployment")]

    before = checksums(base)
    assert len(before) == 2 and all(len(c) == 64 for c in before)
    assert all(a != b for a, b in zip(before, checksums(rotated)))
    assert checksums(replicas) == before

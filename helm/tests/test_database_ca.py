"""databaseCA: the database's CA bundle, from the operator's Secret or ConfigMap, is mounted
read-only in every container that connects to the database (both services, the migrate Jobs, the
migrate init containers), with PGSSLROOTCERT naming it and PGSSLMODE=verify-full. deploy/tls
proves with the real binaries that PGSSLROOTCERT and PGSSLMODE set this way verify the server."""

import helm_python
import pytest

from conftest import by_kind, ci_values, merge, render

MOUNT = "/etc/todo/database-ca"
PATH = f"{MOUNT}/ca.crt"


def database_containers(objs):
    """(description, pod spec, container) of every container that runs a service binary."""
    out = []
    for o in objs:
        if o["kind"] not in ("Deployment", "Job"):
            continue
        spec = o["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            out.append((f'{o["kind"]}/{o["metadata"]["name"]}/{c["name"]}', spec, c))
    return out


def ca_volume(spec):
    found = [v for v in spec.get("volumes", []) if v["name"] == "database-ca"]
    assert len(found) == 1, "one database-ca volume"
    return found[0]


def ca_env(c):
    return {e["name"]: e.get("value") for e in c.get("env", []) if e["name"].startswith("PGSSL")}


@pytest.mark.parametrize(
    "case_name, source, key",
    [("everything", "secret", "root.pem"), ("init-container-migrations", "configMap", "ca.crt")],
)
def test_every_database_container_mounts_the_bundle_read_only(case_name, source, key):
    objs = render(ci_values(case_name))
    containers = database_containers(objs)
    # Both services; the migrations as hook Jobs (everything) or init containers (the other case).
    assert len(containers) == 4, [d for d, _, _ in containers]
    for description, spec, c in containers:
        volume = ca_volume(spec)
        assert set(volume) == {"name", source}, description
        ref = volume[source]
        assert ref.get("secretName", ref.get("name")) == "todo-database-ca", description
        assert ref["items"] == [{"key": key, "path": "ca.crt"}], description
        assert ref["defaultMode"] == 0o444, description
        mounts = [m for m in c["volumeMounts"] if m["name"] == "database-ca"]
        assert mounts == [{"name": "database-ca", "mountPath": MOUNT, "readOnly": True}], description
        assert ca_env(c) == {"PGSSLROOTCERT": PATH, "PGSSLMODE": "verify-full"}, description


def test_without_a_bundle_nothing_is_mounted_or_set(default_objs):
    containers = database_containers(default_objs)
    assert len(containers) == 4
    for description, spec, c in containers:
        assert all(v["name"] != "database-ca" for v in spec.get("volumes", [])), description
        assert all(m["name"] != "database-ca" for m in c.get("volumeMounts", [])), description
        assert ca_env(c) == {}, description


def test_the_hook_jobs_mount_it_too():
    objs = render(ci_values("everything"))
    jobs = by_kind(objs, "Job")
    assert jobs, "everything runs its migrations as hook Jobs"
    for job in jobs:
        ca_volume(job["spec"]["template"]["spec"])


def test_a_secret_and_a_configmap_together_are_refused():
    values = merge(ci_values("default"), {"databaseCA": {"secret": "a", "configMap": "b"}})
    with pytest.raises(helm_python.HelmError, match="set secret or configMap, not both"):
        render(values)


@pytest.mark.parametrize(
    "bad",
    [{"secret": "Not_A_Name"}, {"key": "../escape"}, {"secrets": "typo"}],
    ids=["bad-secret-name", "path-in-key", "misspelled"],
)
def test_invalid_values_are_rejected_by_the_schema(bad):
    with pytest.raises(helm_python.HelmValuesError):
        render(merge(ci_values("default"), {"databaseCA": bad}))

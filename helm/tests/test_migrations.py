"""Migrations run once per install/upgrade as hook Jobs, before new pods, with hook Secret and SA."""

import pytest

from conftest import by_kind, ci_values, component_name, container, env, merge, one, render, secret_value

HOOK = "helm.sh/hook"
WEIGHT = "helm.sh/hook-weight"


def jobs(objs):
    return {j["metadata"]["name"]: j for j in by_kind(objs, "Job")}


@pytest.mark.parametrize("component", ["auth", "task"])
def test_each_service_has_a_pre_install_pre_upgrade_migrate_job(default_objs, component):
    job = jobs(default_objs)[f"{component_name(component)}-migrate"]
    annotations = job["metadata"]["annotations"]
    assert set(annotations[HOOK].split(",")) == {"pre-install", "pre-upgrade"}
    assert container(job)["command"] == [f"{component}-service", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["activeDeadlineSeconds"] > 0


def test_the_running_services_do_not_migrate(default_objs):
    for deployment in by_kind(default_objs, "Deployment"):
        assert env(deployment)["MIGRATE_ON_START"]["value"] == "false"
        assert HOOK not in deployment["metadata"].get("annotations", {})


def test_the_jobs_secret_and_service_account_are_hooks_with_a_lower_weight(default_objs):
    for job in jobs(default_objs).values():
        job_weight = int(job["metadata"]["annotations"][WEIGHT])
        spec = job["spec"]["template"]["spec"]
        account = one(default_objs, "ServiceAccount", spec["serviceAccountName"])
        secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in container(job)["env"] if "valueFrom" in e}
        assert len(secrets) == 1
        secret = one(default_objs, "Secret", secrets.pop())
        for dependency in (account, secret):
            annotations = dependency["metadata"]["annotations"]
            # Pre-install hooks run before ordinary objects exist: what the Job needs must be a
            # hook of the same events, created first.
            assert set(annotations[HOOK].split(",")) == {"pre-install", "pre-upgrade"}
            assert int(annotations[WEIGHT]) < job_weight


def test_the_hook_secret_holds_no_jwt_keys(default_objs):
    job = next(iter(jobs(default_objs).values()))
    name = env(job)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
    assert "jwt-keys" not in one(default_objs, "Secret", name)["data"]
    assert "JWT_KEYS" not in env(job)


@pytest.mark.parametrize("component", ["auth", "task"])
def test_migration_url_defaults_to_the_database_url(default_objs, component):
    job = jobs(default_objs)[f"{component_name(component)}-migrate"]
    ref = env(job)["MIGRATION_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == f"{component}-migration-database-url"
    assert secret_value(one(default_objs, "Secret", ref["name"]), ref["key"]) == f"postgres://{component}:ci@postgres:5432/todo"


def test_a_separate_migration_url_reaches_the_job_and_not_the_service(everything_objs):
    job = jobs(everything_objs)["todo-auth-service-migrate"]
    ref = env(job)["MIGRATION_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    direct = secret_value(one(everything_objs, "Secret", ref["name"]), ref["key"])
    assert direct == "postgres://auth:ci@postgres:5432/todo?sslmode=require"
    service_ref = env(one(everything_objs, "Deployment", "todo-auth-service"))["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert secret_value(one(everything_objs, "Secret", service_ref["name"]), service_ref["key"]).startswith("postgres://auth:ci@pgbouncer")
    assert "MIGRATION_DATABASE_URL" not in env(one(everything_objs, "Deployment", "todo-auth-service"))


def test_with_existing_secret_the_jobs_read_it_and_the_migration_key_is_optional():
    objs = render(ci_values("existing-secret"))
    assert {s["metadata"]["name"] for s in by_kind(objs, "Secret")} == set()
    for job in jobs(objs).values():
        assert env(job)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "todo-operator-secrets"
        migration = env(job)["MIGRATION_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert migration["name"] == "todo-operator-secrets" and migration["optional"] is True


def test_migrations_can_be_turned_off_per_service():
    objs = render(merge(ci_values("default"), {"task": {"migrations": {"enabled": False}}}))
    assert list(jobs(objs)) == [f"{component_name('auth')}-migrate"]
    objs = render(merge(ci_values("default"), {"auth": {"migrations": {"enabled": False}}, "task": {"migrations": {"enabled": False}}}))
    assert jobs(objs) == {}
    # With no Job, no hook Secret or hook ServiceAccount is left behind either.
    assert all(HOOK not in (o["metadata"].get("annotations") or {}) or o["kind"] == "Pod" for o in objs)

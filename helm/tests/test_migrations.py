"""Migrations: by default once per install/upgrade as hook Jobs, before new pods, with a hook
Secret and ServiceAccount; with migrations.mode initContainer, in an init container of every pod
and no hooks at all. deploy/observability/test_chart_migrate.py runs both rendered commands
against a real database."""

import helm_python
import kubernetes_validate
import pytest

from conftest import by_kind, ci_values, component_name, container, env, merge, notes, one, render, secret_value

HOOK = "helm.sh/hook"
WEIGHT = "helm.sh/hook-weight"


def jobs(objs):
    return {j["metadata"]["name"]: j for j in by_kind(objs, "Job")}


def init_mode(base="init-container-migrations", **override):
    return render(merge(ci_values(base), {"migrations": {"mode": "initContainer"}, **override}))


def hooks(objs):
    """Every object that is a Helm hook, but the `helm test` pod."""
    return [f'{o["kind"]}/{o["metadata"]["name"]}' for o in objs
            if HOOK in (o["metadata"].get("annotations") or {}) and o["kind"] != "Pod"]


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


def test_hook_mode_is_the_default_and_adds_no_init_container(default_objs):
    assert ci_values("default").get("migrations") is None
    assert len(jobs(default_objs)) == 2
    for deployment in by_kind(default_objs, "Deployment"):
        assert "initContainers" not in deployment["spec"]["template"]["spec"]


def test_init_container_mode_has_no_hook_at_all():
    objs = init_mode()
    assert jobs(objs) == {}
    assert hooks(objs) == []
    assert [s["metadata"]["name"] for s in by_kind(objs, "Secret")] == ["rel-todo-secrets"]


@pytest.mark.parametrize("component", ["auth", "task"])
def test_each_deployment_migrates_in_an_init_container(component):
    objs = init_mode()
    deployment = one(objs, "Deployment", component_name(component))
    spec = deployment["spec"]["template"]["spec"]
    [init] = spec["initContainers"]
    assert init["name"] == "migrate"
    assert init["command"] == [f"{component}-service", "migrate"]
    assert init["image"] == container(deployment)["image"]
    assert init["securityContext"] == container(deployment)["securityContext"]
    assert init["resources"] == ci_values("default").get("resources", init["resources"])
    assert init["resources"]["limits"]["memory"] == "128Mi"
    # The same Secret and key as the service's own DATABASE_URL.
    init_env = {e["name"]: e for e in init["env"]}
    assert init_env["DATABASE_URL"] == env(deployment)["DATABASE_URL"]
    assert env(deployment)["MIGRATE_ON_START"]["value"] == "false"
    assert "MIGRATION_DATABASE_URL" not in env(deployment)


def test_a_separate_migration_url_reaches_the_init_container_only_when_given():
    objs = init_mode()
    secret = one(objs, "Secret", "rel-todo-secrets")
    for component, direct in (("auth", "postgres://auth:ci@postgres:5432/todo?sslmode=require"), ("task", None)):
        [init] = one(objs, "Deployment", component_name(component))["spec"]["template"]["spec"]["initContainers"]
        ref = {e["name"]: e for e in init["env"]}["MIGRATION_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "rel-todo-secrets", "key": f"{component}-migration-database-url", "optional": True}
        if direct:
            assert secret_value(secret, ref["key"]) == direct
        else:
            # Not in the Secret: the optional variable stays unset and migrate uses DATABASE_URL.
            assert ref["key"] not in secret["data"]


def test_hook_mode_keeps_migration_urls_out_of_the_services_secret(everything_objs):
    assert "auth-migration-database-url" not in one(everything_objs, "Secret", "todo-secrets")["data"]


def test_init_container_mode_with_an_existing_secret_reads_it():
    objs = render(merge(ci_values("existing-secret"), {"migrations": {"mode": "initContainer"}}))
    assert by_kind(objs, "Secret") == [] and jobs(objs) == {} and hooks(objs) == []
    for deployment in by_kind(objs, "Deployment"):
        [init] = deployment["spec"]["template"]["spec"]["initContainers"]
        assert {e["valueFrom"]["secretKeyRef"]["name"] for e in init["env"] if "valueFrom" in e} == {"todo-operator-secrets"}


def test_init_container_mode_honours_the_per_service_switch():
    objs = init_mode(auth={"migrations": {"enabled": False}})
    assert "initContainers" not in one(objs, "Deployment", component_name("auth"))["spec"]["template"]["spec"]
    assert len(one(objs, "Deployment", component_name("task"))["spec"]["template"]["spec"]["initContainers"]) == 1


@pytest.mark.parametrize("version", ["1.29.0", "1.33.0"])
@pytest.mark.parametrize("mode", ["hook", "initContainer"])
def test_both_modes_render_objects_valid_in_strict_mode(mode, version):
    objs = render(merge(ci_values("everything"), {"migrations": {"mode": mode}}))
    workloads = [o for o in objs if o["kind"] in ("Deployment", "Job")]
    assert {o["kind"] for o in workloads} == ({"Deployment", "Job"} if mode == "hook" else {"Deployment"})
    for obj in workloads + by_kind(objs, "Secret"):
        kubernetes_validate.validate(obj, version, strict=True)


def test_an_unknown_mode_is_rejected():
    with pytest.raises(helm_python.HelmValuesError):
        render(merge(ci_values("default"), {"migrations": {"mode": "sidecar"}}))


def test_the_notes_say_where_migrations_ran():
    assert "ran as the pre-install/pre-upgrade Jobs" in notes(ci_values("default"))
    in_pods = notes(ci_values("init-container-migrations"))
    assert "init container `migrate`" in in_pods and "-migrate" not in in_pods


def test_the_migrate_jobs_names_stay_label_sized_under_the_longest_release_name():
    # Kubernetes copies a Job's name into its pod's job-name label, 63 characters at most, and
    # refuses a longer one: the install would fail at its first pre-install hook.
    objs = render(merge(ci_values("default"), {"fullnameOverride": "f" * 63}))
    names = [job["metadata"]["name"] for job in by_kind(objs, "Job")]
    assert len(names) == 2 and len(set(names)) == 2, names
    assert all(len(name) <= 63 and name.endswith("-migrate") for name in names), names


@pytest.mark.parametrize("component", ["auth", "task"])
def test_migrate_gives_up_on_a_lock_wait_after_the_configured_time_in_both_modes(default_objs, component):
    # A migration waiting for a table lock holds up the API's statements queued behind it: the
    # binary bounds that wait (MIGRATION_LOCK_TIMEOUT_MS), 5 s unless the values say otherwise.
    job = jobs(default_objs)[f"{component_name(component)}-migrate"]
    assert env(job)["MIGRATION_LOCK_TIMEOUT_MS"] == {"name": "MIGRATION_LOCK_TIMEOUT_MS", "value": "5000"}
    objs = init_mode(**{component: {"migrations": {"lockTimeoutMs": 0}}})
    [init] = one(objs, "Deployment", component_name(component))["spec"]["template"]["spec"]["initContainers"]
    assert {e["name"]: e for e in init["env"]}["MIGRATION_LOCK_TIMEOUT_MS"]["value"] == "0"
    with pytest.raises(helm_python.HelmValuesError, match="lockTimeoutMs"):
        render(merge(ci_values("default"), {component: {"migrations": {"lockTimeoutMs": -1}}}))

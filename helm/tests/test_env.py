"""The environment each service gets: the operational interface of DESIGN.md."""

import pytest

from conftest import REPO, by_kind, ci_values, component_name, container, env, merge, one, render

BOTH = {
    "DATABASE_URL", "JWT_KEYS", "HTTP_ADDR", "ADMIN_ADDR", "MIGRATE_ON_START", "RUST_LOG",
    "OTEL_SERVICE_NAME", "DATABASE_MAX_CONNECTIONS", "SHUTDOWN_DELAY_SECONDS", "SHUTDOWN_TIMEOUT_SECONDS",
}
# TRUSTED_PROXIES: ci/default-values.yaml sets auth.trustedProxies, which the Ingress requires.
AUTH_ONLY = {
    "RATE_LIMIT_ENABLED", "BCRYPT_COST", "ACCESS_TOKEN_TTL_SECONDS", "TRUSTED_PROXIES",
    "SESSION_MAX_LIFETIME_SECONDS", "REFRESH_TOKEN_REUSE_GRACE_SECONDS", "DELETED_USERS_RETENTION_SECONDS",
}
TASK_ONLY = {"AUTH_ADMIN_URL", "REVOCATION_POLL_SECONDS", "TASKS_MAX_PER_USER", "IDEMPOTENCY_KEY_TTL_SECONDS"}


def test_each_service_gets_exactly_its_variables(default_objs):
    auth = env(one(default_objs, "Deployment", component_name("auth")))
    task = env(one(default_objs, "Deployment", component_name("task")))
    assert set(auth) == BOTH | AUTH_ONLY
    assert set(task) == BOTH | TASK_ONLY


def test_default_values_of_the_interface(default_objs):
    auth = {k: v.get("value") for k, v in env(one(default_objs, "Deployment", component_name("auth"))).items()}
    assert auth["HTTP_ADDR"] == "0.0.0.0:8080"
    assert auth["ADMIN_ADDR"] == "0.0.0.0:9000"
    assert auth["DATABASE_MAX_CONNECTIONS"] == "20"
    assert auth["OTEL_SERVICE_NAME"] == "auth-service"
    assert auth["RATE_LIMIT_ENABLED"] == "true"
    assert auth["BCRYPT_COST"] == "12"
    assert auth["ACCESS_TOKEN_TTL_SECONDS"] == "86400"
    assert auth["SESSION_MAX_LIFETIME_SECONDS"] == "7776000"
    assert auth["REFRESH_TOKEN_REUSE_GRACE_SECONDS"] == "0"
    assert auth["DELETED_USERS_RETENTION_SECONDS"] == "2592000"
    task = {k: v.get("value") for k, v in env(one(default_objs, "Deployment", component_name("task"))).items()}
    assert task["TASKS_MAX_PER_USER"] == "10000"
    assert task["IDEMPOTENCY_KEY_TTL_SECONDS"] == "86400"


def test_session_settings_pass_through():
    objs = render(merge(ci_values("default"), {"auth": {
        "sessionMaxLifetimeSeconds": 86400, "refreshTokenReuseGraceSeconds": 10,
        "deletedUsersRetentionSeconds": 7776000}}))
    auth = {k: v.get("value") for k, v in env(one(objs, "Deployment", component_name("auth"))).items()}
    assert auth["SESSION_MAX_LIFETIME_SECONDS"] == "86400"
    assert auth["REFRESH_TOKEN_REUSE_GRACE_SECONDS"] == "10"
    assert auth["DELETED_USERS_RETENTION_SECONDS"] == "7776000"
    big = render(merge(ci_values("default"), {"task": {"tasksMaxPerUser": 2000000000, "idempotencyKeyTtlSeconds": 3600}}))
    task = {k: v.get("value") for k, v in env(one(big, "Deployment", component_name("task"))).items()}
    assert task["TASKS_MAX_PER_USER"] == "2000000000"
    assert task["IDEMPOTENCY_KEY_TTL_SECONDS"] == "3600"


def test_otel_settings_appear_only_when_set(default_objs, everything_objs):
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env(by_kind(default_objs, "Deployment")[0])
    for deployment in by_kind(everything_objs, "Deployment"):
        e = env(deployment)
        assert e["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability:4317"
        assert e["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "grpc"
        # A ratio sampler gets its ratio: without OTEL_TRACES_SAMPLER_ARG it samples everything.
        assert e["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
        assert e["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.25"
    assert "OTEL_TRACES_SAMPLER_ARG" not in env(by_kind(default_objs, "Deployment")[0])


def test_extra_env_is_appended_per_service(everything_objs):
    auth = env(one(everything_objs, "Deployment", "todo-auth-service"))
    assert auth["CORS_ALLOWED_ORIGINS"]["value"] == "https://todo.example.com"
    assert auth["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "CORS_ALLOWED_ORIGINS" not in env(one(everything_objs, "Deployment", "todo-task-service"))


def test_one_image_with_the_app_version_as_default_tag(default_objs, everything_objs):
    chart = (REPO / "helm" / "todo" / "Chart.yaml").read_text()
    app_version = next(l.split(":", 1)[1].strip().strip('"') for l in chart.splitlines() if l.startswith("appVersion:"))
    images = {container(w)["image"] for w in by_kind(default_objs, "Deployment") + by_kind(default_objs, "Job")}
    assert images == {f"ghcr.io/example/todo:{app_version}"}
    pinned = {container(w)["image"] for w in by_kind(everything_objs, "Deployment")}
    assert pinned == {"registry.example.com/todo:1.2.3@sha256:" + "0123456789abcdef" * 4}


@pytest.mark.parametrize("component", ["auth", "task"])
def test_deployment_ports_are_named_http_and_admin(default_objs, component):
    ports = container(one(default_objs, "Deployment", component_name(component)))["ports"]
    assert [(p["name"], p["containerPort"]) for p in ports] == [("http", 8080), ("admin", 9000)]

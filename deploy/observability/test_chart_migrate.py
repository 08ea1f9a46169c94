"""The chart's migrate command runs: rendered by the real Helm engine in each migrations.mode (the
hook Jobs' container, or the Deployments' init containers), each `<binary> migrate` is run with
the environment the chart gives it (read from the rendered Secret) against a fresh database, and
leaves every migration applied, twice in a row as a pod restart would."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess

import helm_python
import pytest
import yaml

from stack import BIN_DIR, PG_URL, REPO, psql, query_one

CHART = REPO / "helm" / "todo"
SCHEMAS = {"auth-service": "auth", "task-service": "tasks"}

helm_python.disable_logging()


def render(mode: str, database_url: str) -> list[dict]:
    values = {
        "secrets": {
            "jwtKeys": [{"kid": "obs", "secret": "obs-only-not-a-real-key-0123456789abcdef"}],
            "database": {"auth": {"url": database_url, "migrationUrl": database_url}, "task": {"url": database_url}},
        },
        "ingress": {"enabled": False},
        "migrations": {"mode": mode},
    }
    files = helm_python.Chart.load(str(CHART)).render(values=values, name="obs", namespace="todo")
    return [o for path, text in files.items() if not path.endswith("NOTES.txt") for o in yaml.safe_load_all(text) if o]


def migrate_containers(objs: list[dict], mode: str) -> list[dict]:
    if mode == "hook":
        return [c for o in objs if o["kind"] == "Job" for c in o["spec"]["template"]["spec"]["containers"]]
    return [c for o in objs if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"].get("initContainers", [])]


def environment(container: dict, objs: list[dict]) -> dict[str, str]:
    """The container's environment as the kubelet would build it from the rendered Secrets."""
    data = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "Secret"}
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        if ref["key"] not in data[ref["name"]]:
            assert ref.get("optional") is True, var
            continue
        env[var["name"]] = base64.b64decode(data[ref["name"]][ref["key"]]).decode()
    return env


@pytest.mark.parametrize("mode", ["hook", "initContainer"])
def test_the_rendered_migrate_commands_migrate_a_fresh_database(mode):
    database = f"obs_migrate_{secrets.token_hex(4)}"
    psql(f"CREATE DATABASE {database}")
    try:
        objs = render(mode, f"{PG_URL}/{database}")
        containers = migrate_containers(objs, mode)
        assert sorted(c["command"][0] for c in containers) == ["auth-service", "task-service"]
        for container in containers:
            binary, *args = container["command"]
            assert args == ["migrate"]
            env = {"PATH": os.environ["PATH"], **environment(container, objs)}
            assert env["DATABASE_URL"].endswith(f"/{database}")
            # A second run finds nothing to do, as every restart of an init container does.
            for _ in range(2):
                done = subprocess.run([str(BIN_DIR / binary), *args], env=env, capture_output=True,
                                      text=True, timeout=120)
                assert done.returncode == 0, f"{binary} migrate:\n{done.stdout}{done.stderr}"
        for binary, schema in SCHEMAS.items():
            files = sorted(p.stem for p in (REPO / "migrations" / schema).glob("*.sql"))
            applied = query_one(database, f"SELECT count(*) FROM {schema}._sqlx_migrations WHERE success")
            assert int(applied) == len(files) >= 2, (binary, applied, files)
    finally:
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

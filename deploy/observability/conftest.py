"""Fixtures: stacks of the real services (exporting over gRPC, over HTTP/protobuf, or not at
all), each driven once through the whole API with known `traceparent`s and request ids, and a
real Prometheus scraping the gRPC stack."""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml

from stack import REPO, Stack, free_port, query_one, wait_until

PROTOCOLS = ["grpc", "http/protobuf"]


@dataclass
class Call:
    """One request the scenario made, and the trace context it sent."""

    service: str
    method: str
    path: str
    status: int
    request_id: str
    trace_id: str
    parent_span_id: str


@dataclass
class Traffic:
    """Everything the scenario did, and every secret it handled."""

    stack: Stack
    calls: dict[str, Call] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    user_id: str = ""

    def call(self, key, service, method, path, *, body=None, token=None, expect=200):
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        request_id = f"obs-{key}-{secrets.token_hex(4)}"
        headers = {"traceparent": f"00-{trace_id}-{parent}-01", "x-request-id": request_id}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        base = self.stack.auth.api if service == "auth-service" else self.stack.task.api
        response = requests.request(
            method, f"http://{base}{path}", json=body, headers=headers, timeout=10
        )
        assert response.status_code == expect, (key, response.status_code, response.text)
        self.calls[key] = Call(
            service, method, path, response.status_code, request_id, trace_id, parent
        )
        return response


def drive(stack: Stack) -> Traffic:
    """register, login, me, refresh, task CRUD, logout, and a few failures."""
    t = Traffic(stack)
    email = f"obs-{secrets.token_hex(4)}@example.com"
    password = f"pw-{secrets.token_hex(12)}"
    t.secrets["password"] = password
    auth = "/api/v1/auth"
    creds = {"email": email, "password": password}
    registered = t.call("register", "auth-service", "POST", f"{auth}/register", body=creds, expect=201)
    t.user_id = registered.json()["id"]
    t.call(
        "login_wrong_password",
        "auth-service",
        "POST",
        f"{auth}/login",
        body={"email": email, "password": password + "x"},
        expect=401,
    )
    tokens = t.call("login", "auth-service", "POST", f"{auth}/login", body=creds).json()
    t.secrets["access_token"] = tokens["access_token"]
    t.secrets["refresh_token"] = tokens["refresh_token"]
    t.call("me", "auth-service", "GET", f"{auth}/me", token=tokens["access_token"])
    t.call(
        "delete_me_wrong_password",
        "auth-service",
        "DELETE",
        f"{auth}/me",
        body={"password": password + "x"},
        token=tokens["access_token"],
        expect=401,
    )
    rotated = t.call(
        "refresh",
        "auth-service",
        "POST",
        f"{auth}/refresh",
        body={"refresh_token": tokens["refresh_token"]},
    ).json()
    t.secrets["access_token_2"] = rotated["access_token"]
    t.secrets["refresh_token_2"] = rotated["refresh_token"]
    access = rotated["access_token"]

    tasks = "/api/v1/tasks"
    task = t.call(
        "task_create",
        "task-service",
        "POST",
        tasks,
        body={"title": "observe me", "description": "spans and logs"},
        token=access,
        expect=201,
    ).json()
    item = f"{tasks}/{task['id']}"
    t.call("task_list", "task-service", "GET", tasks, token=access)
    t.call("task_get", "task-service", "GET", item, token=access)
    t.call("task_update", "task-service", "PUT", item, body={"title": "renamed"}, token=access)
    t.call(
        "task_complete",
        "task-service",
        "PATCH",
        f"{item}/complete",
        body={"completed": True},
        token=access,
    )
    t.call("task_delete", "task-service", "DELETE", item, token=access)
    t.call("task_unauthenticated", "task-service", "GET", tasks, expect=401)

    t.call(
        "logout",
        "auth-service",
        "POST",
        f"{auth}/logout",
        body={"refresh_token": rotated["refresh_token"]},
        expect=204,
    )
    # The first refresh token again: spent, of a revoked session.
    t.call(
        "refresh_spent",
        "auth-service",
        "POST",
        f"{auth}/refresh",
        body={"refresh_token": tokens["refresh_token"]},
        expect=401,
    )
    t.call("me_after_logout", "auth-service", "GET", f"{auth}/me", token=access, expect=401)
    # What the database keeps of the password: it must never be logged either.
    t.secrets["password_hash"] = query_one(
        stack.database, f"SELECT password_hash FROM auth.users WHERE email = '{email}'"
    )
    assert t.secrets["password_hash"].startswith("$2")
    return t


@pytest.fixture(scope="session")
def workdir():
    with tempfile.TemporaryDirectory(prefix="obs-") as d:
        yield Path(d)


def run_stack(workdir: Path, name: str, protocol: str | None, log_format: str = "json"):
    stack = Stack(workdir / name, protocol, log_format)
    try:
        stack.start()
        yield drive(stack)
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def grpc_stack(workdir) -> Traffic:
    """Exporting over OTLP/gRPC; Prometheus scrapes this one too."""
    yield from run_stack(workdir, "grpc", "grpc")


@pytest.fixture(scope="session")
def http_stack(workdir) -> Traffic:
    """Exporting over OTLP/HTTP with protobuf bodies."""
    yield from run_stack(workdir, "http-protobuf", "http/protobuf")


@pytest.fixture(scope="session")
def untraced(workdir) -> Traffic:
    """OTEL_EXPORTER_OTLP_ENDPOINT unset."""
    yield from run_stack(workdir, "untraced", None)


@pytest.fixture(scope="session", params=PROTOCOLS)
def traced(request) -> Traffic:
    """Each exporting stack in turn, after the scenario ran."""
    return request.getfixturevalue("grpc_stack" if request.param == "grpc" else "http_stack")


@pytest.fixture(scope="session", params=PROTOCOLS + ["untraced"])
def any_stack(request) -> Traffic:
    """Each of the three stacks in turn."""
    names = {"grpc": "grpc_stack", "http/protobuf": "http_stack", "untraced": "untraced"}
    return request.getfixturevalue(names[request.param])


@pytest.fixture(scope="session", params=["grpc", "untraced"])
def text_stack(request, workdir) -> Traffic:
    """`LOG_FORMAT=text`, exporting over gRPC and not at all: the text lines get the request's
    fields (and, exported, its trace ids) from the request span itself (common::request_fields)."""
    protocol = None if request.param == "untraced" else request.param
    yield from run_stack(workdir, f"text-{request.param}", protocol, log_format="text")


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict]:
        body = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def api(self, path: str, **params) -> dict:
        """GET /api/v1/<path>: the whole answer, errors included (status, errorType, error)."""
        return requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10).json()


RULES = REPO / "deploy" / "prometheus" / "alerts.yaml"


@pytest.fixture(scope="session")
def prometheus(grpc_stack, workdir) -> Prometheus:
    """A real Prometheus on loopback scraping both services' admin ports every second, with the
    target label `namespace` a Kubernetes scrape adds, evaluating deploy/prometheus/alerts.yaml."""
    # Every group each second: the 30-day group's 5-minute interval would outlast the tests.
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group.pop("interval", None)
    (workdir / "rules.yaml").write_text(yaml.safe_dump(rules))
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: ['{workdir / 'rules.yaml'}']\n"
        "scrape_configs:\n"
        f"  - job_name: auth-service\n    static_configs: [{{targets: ['{grpc_stack.stack.auth.admin}'], labels: {{namespace: todo}}}}]\n"
        f"  - job_name: task-service\n    static_configs: [{{targets: ['{grpc_stack.stack.task.admin}'], labels: {{namespace: todo}}}}]\n"
    )
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def ready():
        assert process.poll() is None, (workdir / "prometheus.log").read_text()[-2000:]
        try:
            return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(ready, 30, "Prometheus to be ready", interval=0.2)
        yield Prometheus(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


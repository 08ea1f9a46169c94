"""Logs: one JSON object per line; with tracing on, every line of a request carries that
request's trace and span ids; no password, token or hash ever appears, at RUST_LOG=debug."""

from __future__ import annotations

import json

import pytest

from test_traces import server_span


def request_fields(line: dict) -> dict | None:
    """What a log line written inside a request says about that request (its `request` key)."""
    return line.get("request")


def lines_of(service, request_id: str) -> list[dict]:
    return [
        line
        for line in service.json_logs()
        if (request_fields(line) or {}).get("request_id") == request_id
    ]


def service_of(traffic, key):
    name = traffic.calls[key].service
    return traffic.stack.auth if name == "auth-service" else traffic.stack.task


def test_every_line_is_a_json_object(any_stack):
    for service in (any_stack.stack.auth, any_stack.stack.task):
        lines = service.stdout.read_text().splitlines()
        assert len(lines) > 20, service.name
        for line in lines:
            event = json.loads(line)
            assert isinstance(event, dict)
            assert {"timestamp", "level", "target"} <= event.keys(), line
        # Nothing else is written: no panic, no unstructured output.
        assert service.stderr.read_text() == "", service.name


def test_request_lines_carry_the_trace_and_span_ids(traced):
    for key, call in traced.calls.items():
        server = server_span(traced, key)
        lines = lines_of(service_of(traced, key), call.request_id)
        assert lines, f"no log line of {key}"
        for line in lines:
            request = request_fields(line)
            assert request["trace_id"] == call.trace_id, (key, line)
            assert request["span_id"] == server["span_id"], (key, line)
            # The request span leads the span list, with its fields (what the trace exports).
            assert line["spans"][0]["name"] == "request", (key, line)
            assert line["spans"][0]["request_id"] == call.request_id, (key, line)
    # The info-level event of a login, as an operator sees it at the default level.
    (success,) = [
        line
        for line in lines_of(traced.stack.auth, traced.calls["login"].request_id)
        if line.get("message") == "login succeeded"
    ]
    assert success["level"] == "INFO"
    assert success["request"]["trace_id"] == traced.calls["login"].trace_id
    # Lines written inside a DB span still carry the request's ids. A
    # create is coalesced (tasks::creator): its statement, db.tasks.create_many, runs under the
    # db.tasks.create span of its batch's first create.
    inside_db = [
        line
        for line in lines_of(traced.stack.task, traced.calls["task_create"].request_id)
        if line["spans"][-1]["name"] == "db.tasks.create_many"
        and "db.tasks.create" in [span["name"] for span in line["spans"]]
    ]
    assert inside_db, "sqlx logs no statement inside db.tasks.create_many under db.tasks.create"
    assert all(request_fields(line)["trace_id"] for line in inside_db)


def test_a_failed_login_is_audited_with_the_account_and_the_client(any_stack):
    call = any_stack.calls["login_wrong_password"]
    (failed,) = [
        line
        for line in lines_of(any_stack.stack.auth, call.request_id)
        if line.get("message") == "login failed"
    ]
    assert failed["level"] == "INFO"
    assert failed["user_id"] == any_stack.user_id
    assert failed["client_ip"] == "127.0.0.1"
    assert failed["reason"] == "invalid_credentials"
    # A signed-in user's wrong password (to delete the account, here) is audited too.
    call = any_stack.calls["delete_me_wrong_password"]
    (checked,) = [
        line
        for line in lines_of(any_stack.stack.auth, call.request_id)
        if line.get("message") == "password check failed"
    ]
    assert checked["user_id"] == any_stack.user_id
    assert checked["client_ip"] == "127.0.0.1"


def test_without_an_endpoint_lines_carry_no_trace_ids(untraced):
    login = untraced.calls["login"]
    lines = lines_of(untraced.stack.auth, login.request_id)
    assert any(line.get("message") == "login succeeded" for line in lines)
    for line in lines:
        assert "trace_id" not in request_fields(line), line
        # Nothing reads the request span's fields as it runs: it has none, and its lines take
        # them from `request` (common::request_fields).
        assert line["spans"][0] == {"name": "request"}, line
    # The incoming traceparent is not adopted either.
    logs = "\n".join(untraced.stack.auth.log_lines())
    assert login.trace_id not in logs


def test_without_an_endpoint_no_database_span_is_made(untraced):
    # Nothing would read them (the request span is on every line), and they cost CPU per request.
    # sqlx's statement lines are the ones written inside them when they exist (see
    # test_request_lines_carry_the_trace_and_span_ids).
    for service in (untraced.stack.auth, untraced.stack.task):
        lines = service.json_logs()
        statements = [
            line for line in lines if line["target"] == "sqlx::query" and request_fields(line)
        ]
        assert statements, f"{service.name}: sqlx logged no statement inside a request"
        names = {span["name"] for line in lines for span in line.get("spans", [])}
        assert not [name for name in names if name.startswith("db")], (service.name, names)
    # A coalesced single read's statement runs in a task of its own: its lines still name the
    # request of the batch's first read.
    task_get = untraced.calls["task_get"].request_id
    batched = [
        line
        for line in lines_of(untraced.stack.task, task_get)
        if line["target"] == "sqlx::query" and "unnest(" in line.get("db.statement", "")
    ]
    assert batched, "the single read's batched statement logged no line in its request"


@pytest.mark.parametrize("secret", ["password", "password_hash", "access_token",
                                    "access_token_2", "refresh_token", "refresh_token_2"])
def test_no_secret_in_any_log_line(any_stack, secret):
    value = any_stack.secrets[secret]
    lines = any_stack.stack.auth.log_lines() + any_stack.stack.task.log_lines()
    # The capture is the debug-level one the check relies on.
    assert any('"level":"DEBUG"' in line for line in lines)
    leaked = [line for line in lines if value in line]
    assert not leaked, f"the {secret} is logged:\n" + "\n".join(leaked[:3])
    # Nor a fragment long enough to matter (a token cut in two, say).
    fragment = value[len(value) // 3 : len(value) // 3 + 16]
    assert not any(fragment in line for line in lines), f"part of the {secret} is logged"

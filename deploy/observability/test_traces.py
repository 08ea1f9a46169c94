"""Traces, over OTLP/gRPC and OTLP/HTTP-protobuf, received by a real OTLP receiver: the
incoming `traceparent` is the server span's parent, DB calls are client spans under it, the
resource names the service and its version, and no secret becomes an attribute."""

from __future__ import annotations

import json
import re

from stack import REPO

VERSION = re.search(
    r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"',
    (REPO / "Cargo.toml").read_text(),
    re.M | re.S,
).group(1)

# Requests of the scenario, the DB spans each must contain, and the status it answered.
EXPECTED_DB_SPANS = {
    "register": ["db.users.insert"],
    "login": ["db.users.find_by_email", "db.sessions.start"],
    # Waiting for a pooled connection is a span of its own.
    "me": ["db.pool.acquire", "db.users.get"],
    "refresh": ["db.sessions.rotate"],
    "logout": ["db.sessions.end"],
    "task_create": ["db.tasks.create"],
    "task_list": ["db.tasks.list"],
    # Single reads are coalesced (tasks::reader): the wait and the statement (its acquire and
    # db.tasks.get_many) are under db.tasks.get.
    "task_get": ["db.tasks.get"],
    "task_update": ["db.tasks.update"],
    "task_complete": ["db.tasks.update"],
    "task_delete": ["db.tasks.delete"],
}


def server_span(traffic, key):
    """Waits for the server span of the scenario's request `key`."""
    call = traffic.calls[key]

    def find(spans):
        return next(
            (
                s
                for s in spans
                if s["trace_id"] == call.trace_id and s["kind"] == "SPAN_KIND_SERVER"
            ),
            None,
        )

    return traffic.stack.wait_for_spans(find, what=f"the server span of {key}")


def test_traceparent_is_the_parent_of_the_server_span(traced):
    for key, call in traced.calls.items():
        span = server_span(traced, key)
        assert span["parent_span_id"] == call.parent_span_id, key
        assert span["resource"]["service.name"] == call.service, key
        route = span["attributes"]["http.route"]
        assert span["name"] == f"{call.method} {route}", key
        assert span["attributes"]["http.request.method"] == call.method, key
        assert span["attributes"]["http.response.status_code"] == call.status, key
        assert span["attributes"]["request_id"] == call.request_id, key
        # The log lines carry this span's ids (test_logs); as attributes they would only repeat
        # the span's own.
        assert "trace_id" not in span["attributes"], key
    assert {s["transport"] for s in traced.stack.spans.spans()} == {traced.stack.protocol}


def test_db_calls_are_client_spans_under_the_server_span(traced):
    for key, names in EXPECTED_DB_SPANS.items():
        server = server_span(traced, key)
        trace = traced.calls[key].trace_id

        def children(spans):
            found = {
                s["name"]: s
                for s in spans
                if s["trace_id"] == trace and s["parent_span_id"] == server["span_id"]
            }
            return found if all(n in found for n in names) else None

        found = traced.stack.wait_for_spans(children, what=f"DB spans {names} under {key}")
        for name in names:
            span = found[name]
            assert span["kind"] == "SPAN_KIND_CLIENT", (key, name)
            assert span["attributes"]["db.system"] == "postgresql", (key, name)
            assert span["resource"]["service.name"] == traced.calls[key].service
            # A child lies within its parent in time.
            assert server["start_unix_nano"] <= span["start_unix_nano"]
            assert span["end_unix_nano"] <= server["end_unix_nano"]


def test_resource_names_service_and_version(traced):
    server_span(traced, "task_delete")
    server_span(traced, "me_after_logout")
    resources = {
        json.dumps(s["resource"], sort_keys=True) for s in traced.stack.spans.spans()
    }
    services = set()
    for text in resources:
        resource = json.loads(text)
        assert resource["service.version"] == VERSION, resource
        services.add(resource["service.name"])
    assert services == {"auth-service", "task-service"}


def test_no_secret_is_a_span_attribute(traced):
    server_span(traced, "me_after_logout")
    spans = traced.stack.spans.spans()
    assert len(spans) >= len(traced.calls) * 2
    text = json.dumps(spans)
    for name, value in traced.secrets.items():
        assert value not in text, f"the {name} is in a span"
    # Neither is the Authorization header nor any request body.
    assert "Bearer" not in text
    assert '"password"' not in text


"""Text logs (`LOG_FORMAT=text`, for a person at a terminal): every line written inside a
request names it by its request id in the request span's fields, with traces exported carries
the server span's trace and span ids too, and never holds a secret, at RUST_LOG=debug.

The JSON lines take these fields from the request span's extension (common::request_fields);
the text format can only print span fields, so with text logs the span must carry them all."""

from __future__ import annotations

from test_logs import service_of
from test_traces import server_span


def text_lines_of(service, request_id: str) -> list[str]:
    return [line for line in service.log_lines() if f'request_id="{request_id}"' in line]


def test_text_lines_name_the_request_and_its_trace(text_stack):
    traced = text_stack.stack.protocol is not None
    for key, call in text_stack.calls.items():
        lines = text_lines_of(service_of(text_stack, key), call.request_id)
        assert lines, f"no text line names the request {key}"
        span_id = server_span(text_stack, key)["span_id"] if traced else None
        for line in lines:
            assert f"http.request.method={call.method}" in line, (key, line)
            if traced:
                assert f'trace_id="{call.trace_id}"' in line, (key, line)
                assert f'span_id="{span_id}"' in line, (key, line)
            else:
                assert "trace_id=" not in line and "span_id=" not in line, (key, line)
    # The caller, once authenticated, is on the lines of the request (auth::record_caller).
    me = text_lines_of(text_stack.stack.auth, text_stack.calls["me"].request_id)
    assert any("user_id=" in line for line in me), me


def test_text_logs_are_text_and_hold_no_secret(text_stack):
    for service in (text_stack.stack.auth, text_stack.stack.task):
        lines = service.log_lines()
        assert any(" DEBUG " in line for line in lines), service.name
        assert not [line for line in lines if line.startswith("{")], service.name
        assert service.stderr.read_text() == "", service.name
    lines = text_stack.stack.auth.log_lines() + text_stack.stack.task.log_lines()
    for secret, value in text_stack.secrets.items():
        assert not [line for line in lines if value in line], f"the {secret} is logged"

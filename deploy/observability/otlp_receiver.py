"""A minimal OTLP trace receiver, standing in for an OpenTelemetry collector.

It serves `TraceService/Export` over gRPC or `POST /v1/traces` (protobuf) over HTTP on a
loopback port, flattens every received span into a dict, keeps them in memory for the tests and
appends them as JSON lines to a file (the record a failed run leaves behind).
"""

from __future__ import annotations

import gzip
import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

KINDS = {value: name for name, value in Span.SpanKind.items()}


def any_value(value: AnyValue):
    """An OTLP attribute value as a plain Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def flatten(request: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> list[dict]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: any_value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "transport": transport,
                        "resource": resource,
                        "scope": scope_spans.scope.name,
                        "name": span.name,
                        "kind": KINDS.get(span.kind, str(span.kind)),
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "attributes": {kv.key: any_value(kv.value) for kv in span.attributes},
                        "events": [
                            {
                                "name": event.name,
                                "attributes": {
                                    kv.key: any_value(kv.value) for kv in event.attributes
                                },
                            }
                            for event in span.events
                        ],
                        "start_unix_nano": span.start_time_unix_nano,
                        "end_unix_nano": span.end_time_unix_nano,
                    }
                )
    return spans


class SpanStore:
    """Spans received so far, thread-safe, mirrored to a JSON-lines file."""

    def __init__(self, path: Path):
        self.path = path
        self._spans: list[dict] = []
        self._lock = threading.Lock()
        self.exports = 0

    def add(self, spans: list[dict]) -> None:
        with self._lock:
            self.exports += 1
            self._spans.extend(spans)
            with self.path.open("a", encoding="utf-8") as out:
                for span in spans:
                    out.write(json.dumps(span) + "\n")

    def spans(self) -> list[dict]:
        with self._lock:
            return list(self._spans)


class _GrpcTraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: SpanStore):
        self.store = store

    def Export(self, request, context):  # noqa: N802 (the gRPC method name)
        self.store.add(flatten(request, "grpc"))
        return trace_service_pb2.ExportTraceServiceResponse()


class GrpcReceiver:
    """OTLP/gRPC on 127.0.0.1:port."""

    protocol = "grpc"

    def __init__(self, store: SpanStore, port: int):
        self.store = store
        self.port = port
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _GrpcTraceService(store), self.server
        )
        bound = self.server.add_insecure_port(f"127.0.0.1:{port}")
        if bound != port:
            raise RuntimeError(f"could not bind the gRPC receiver to 127.0.0.1:{port}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=1).wait()


class HttpReceiver:
    """OTLP/HTTP (protobuf) on 127.0.0.1:port, path /v1/traces."""

    protocol = "http/protobuf"

    def __init__(self, store: SpanStore, port: int):
        self.store = store
        self.port = port
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server hook name)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest()
                try:
                    request.ParseFromString(body)
                except Exception:  # a body that is not OTLP protobuf
                    self.send_error(400)
                    return
                receiver.store.add(flatten(request, "http/protobuf"))
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):  # keep pytest's output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        # The base URL: the exporter appends /v1/traces itself.
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

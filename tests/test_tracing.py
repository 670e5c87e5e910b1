"""Traces across hosts: the openai SDK's request (with a W3C ``traceparent``) through gateway, queue and
worker to an OpenAI-compatible upstream arrives at a local OTLP/HTTP receiver as one trace whose spans
link parent to child, and the upstream's request names the worker's upstream span."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

from tests.servers import RedisServer
from tests.system import System

GATEWAY_SPANS = {"POST /v1/chat/completions", "auth", "permission", "admission", "time to first token", "streaming"}
WORKER_SPANS = {"queue wait", "worker claim", "upstream"}


@dataclass(frozen=True)
class Span:
    name: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int


class OtlpReceiver:
    """A local OTLP/HTTP trace receiver: each export's protobuf body decoded into spans."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.take(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next(attribute.value.string_value for attribute in resource_spans.resource.attributes
                           if attribute.key == "service.name")
            for scope_spans in resource_spans.scope_spans:
                with self.lock:
                    self.spans.extend(Span(span.name, service, span.trace_id.hex(), span.span_id.hex(),
                                           span.parent_span_id.hex(), span.kind, span.start_time_unix_nano,
                                           span.end_time_unix_nano) for span in scope_spans.spans)

    def trace(self, trace_id: str, names: set[str], timeout: float = 15.0) -> dict[str, Span]:
        """The trace's spans by name, once every one of ``names`` has arrived."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = {span.name: span for span in self.spans if span.trace_id == trace_id}
            if names <= found.keys() or time.monotonic() > deadline:
                assert names <= found.keys(), f"missing spans {names - found.keys()}"
                return found
            time.sleep(0.05)


@dataclass
class Traced:
    receiver: OtlpReceiver
    client: openai.OpenAI
    base: str
    token: str


@pytest.fixture(scope="module")
def traced(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, logs: Path,
           upstream: str) -> Iterator[Traced]:
    receiver = OtlpReceiver()
    system = System(f"sqlite:///{tmp_path_factory.mktemp('tracing') / 'db.sqlite'}", redis_server, logs)
    system.cli("llm", "add", "traced", "--backend", "openai_compat", "--base-url", upstream,
               "--upstream-model", "params")
    token = system.user_with_token("traced")
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    system.workers("traced", **otel)
    base = system.gateway(**otel)
    yield Traced(receiver, openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0), base, token)
    system.stop()
    receiver.server.shutdown()
    receiver.server.server_close()


def test_a_streamed_request_is_one_trace_from_client_to_upstream(traced: Traced) -> None:
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    stream = traced.client.chat.completions.create(
        model="traced", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_headers={"traceparent": f"00-{trace_id}-{client_span}-01"})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    spans = traced.receiver.trace(trace_id, GATEWAY_SPANS | WORKER_SPANS)
    server = spans["POST /v1/chat/completions"]
    assert (server.parent_id, server.service, server.kind) == (client_span, "modelport-gateway",
                                                               SpanMessage.SPAN_KIND_SERVER)
    for name in GATEWAY_SPANS - {server.name}:
        assert (spans[name].parent_id, spans[name].service) == (server.span_id, "modelport-gateway"), name
    for name in ("queue wait", "worker claim"):
        assert (spans[name].parent_id, spans[name].service) == (server.span_id, "modelport-worker"), name
    assert spans["worker claim"].kind == SpanMessage.SPAN_KIND_CONSUMER
    upstream = spans["upstream"]
    assert (upstream.parent_id, upstream.kind) == (spans["worker claim"].span_id, SpanMessage.SPAN_KIND_CLIENT)
    # The upstream's request continued the trace from the worker's upstream span.
    assert json.loads(text)["traceparent"] == f"00-{trace_id}-{upstream.span_id}-01"
    # The phases follow one another: queued, claimed, first token, the rest.
    assert spans["admission"].end_ns <= spans["time to first token"].end_ns <= spans["streaming"].start_ns
    assert spans["queue wait"].end_ns <= spans["worker claim"].start_ns + 1_000_000
    assert server.start_ns <= spans["auth"].start_ns and spans["streaming"].end_ns <= server.end_ns


@pytest.mark.parametrize("traceparent", [None, "00-zzzz-not-a-trace", "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
                                         "00-" + "a" * 32 + "-" + "b" * 16 + "-01" + "x" * 10_000])
def test_without_a_valid_traceparent_the_gateway_starts_a_trace(traced: Traced, traceparent: str | None) -> None:
    headers = {"Authorization": f"Bearer {traced.token}"} | ({"traceparent": traceparent} if traceparent else {})
    answer = httpx.post(f"{traced.base}/v1/chat/completions", headers=headers, timeout=10,
                        json={"model": "traced", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text
    forwarded = json.loads(answer.json()["choices"][0]["message"]["content"])["traceparent"]
    trace_id = forwarded.split("-")[1]
    assert trace_id not in ("a" * 32, "0" * 32)
    spans = traced.receiver.trace(trace_id, GATEWAY_SPANS | WORKER_SPANS)
    assert spans["POST /v1/chat/completions"].parent_id == ""


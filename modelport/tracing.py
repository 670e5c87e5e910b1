"""OpenTelemetry traces across gateway, queue and worker, exported by OTLP/HTTP to
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); when neither is set nothing is
set up and every helper here returns at once, so an untraced installation pays nothing for them.

A trace crosses processes as a W3C ``traceparent``: from the client's request header to the job envelope,
and from the worker to an OpenAI-compatible upstream's request headers."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)
PROPAGATOR = TraceContextTextMapPropagator()
Attributes = Mapping[str, str | int | float | bool]
NO_SPAN: AbstractContextManager[None] = nullcontext()  # what ``span`` gives when not tracing (reusable)

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None


def configure(service: str) -> None:
    """Export this process's spans as ``service`` (``OTEL_SERVICE_NAME`` wins) when an OTLP endpoint is set.
    Idempotent: uvicorn's worker processes call it again."""
    global _tracer, _provider
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if _tracer is not None or not endpoint:
        return
    # The SDK and its exporter are imported only here: a process that does not trace never loads them.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service})
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = _provider.get_tracer("modelport")
    log.info("exporting traces as %s", resource.attributes.get("service.name"))


def enabled() -> bool:
    return _tracer is not None


def flush() -> None:
    """Send the spans still buffered (a process about to stop)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)


def continued(headers: Mapping[str, str]) -> Context:
    """The trace a ``traceparent`` (and ``tracestate``) in ``headers`` names; an empty context (a new trace)
    when there is none or it is malformed."""
    return PROPAGATOR.extract(headers)


def traceparent() -> str | None:
    """The current span as a ``traceparent`` value, for a job's envelope (None when not tracing)."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def with_trace_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` and the current span's ``traceparent``, for a request to an upstream; ``headers`` itself
    when not tracing."""
    if _tracer is None:
        return headers
    carrier = dict(headers)
    PROPAGATOR.inject(carrier)
    return carrier


def span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, parent: Context | None = None,
         attributes: Attributes | None = None) -> AbstractContextManager[trace.Span | None]:
    """A span around a ``with`` block, current within it (a child of ``parent``, or of the current span);
    the block gets the span to annotate, or None when not tracing."""
    if _tracer is None:
        return NO_SPAN
    return _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes)


def record(name: str, started_s: float, ended_s: float, *, parent: Context | None = None,
           attributes: Attributes | None = None) -> None:
    """A span for a phase already over, timed by ``time.monotonic()`` readings of this process."""
    if _tracer is None:
        return
    phase = _tracer.start_span(name, context=parent, attributes=attributes, start_time=_epoch_ns(started_s))
    phase.end(end_time=_epoch_ns(ended_s))


def record_since(name: str, started_epoch_ms: int, *, parent: Context | None = None,
                 attributes: Attributes | None = None) -> None:
    """A span from a wall-clock time another host took (a job's queueing) until now; a clock ahead of this
    one's makes it empty, never negative."""
    if _tracer is None:
        return
    now = time.time_ns()
    phase = _tracer.start_span(name, context=parent, attributes=attributes,
                               start_time=min(now, started_epoch_ms * 1_000_000))
    phase.end(end_time=now)


def annotate(current: trace.Span | None, **attributes: str | int | float | bool) -> None:
    """Attributes on a span ``span`` yielded (nothing when it yielded None)."""
    if current is not None:
        current.set_attributes(attributes)


def _epoch_ns(monotonic_s: float) -> int:
    return time.time_ns() - int((time.monotonic() - monotonic_s) * 1e9)

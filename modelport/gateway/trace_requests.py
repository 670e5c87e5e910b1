"""The server span of each request the gateway serves while tracing is on, continuing the client's W3C
``traceparent``; the request's other spans (auth, admission, the job's phases, the worker's) are its
children."""

from __future__ import annotations

from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport import tracing
from modelport.gateway.access_log import COUNTED, QUIET

PROPAGATED = (b"traceparent", b"tracestate")


class TraceRequests:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in QUIET:
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"] if name in PROPAGATED}
        method, path = scope["method"], scope["path"]
        # Span names stay a bounded set: the model endpoints by path, anything else by method alone.
        name = f"{method} {path}" if path in COUNTED else method
        status = {"code": 0}

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        with tracing.span(name, kind=SpanKind.SERVER, parent=tracing.continued(headers),
                          attributes={"http.request.method": method, "url.path": path}) as current:
            try:
                await self.app(scope, receive, observe)
            finally:
                access = scope.get("state", {}).get("access", {})
                code = status["code"] or 499
                if current is not None and code >= 500:
                    current.set_status(StatusCode.ERROR)
                tracing.annotate(current, **{"http.response.status_code": code},
                                 **{f"modelport.{key}": str(value) for key, value in access.items()
                                    if key in ("model", "job", "requested")})

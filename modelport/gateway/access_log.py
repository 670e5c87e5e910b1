"""One JSON line per request on the ``modelport.access`` logger (never tokens or prompts), and the
request counter by model, status and endpoint."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.gateway.metrics import GatewayMetrics

log = logging.getLogger("modelport.access")
QUIET = {"/healthz", "/readyz", "/metrics"}
# The requests counted by model, status and endpoint: those that ask a model for something.
COUNTED = {"/v1/chat/completions": "chat", "/v1.0/chat/completions": "chat", "/v1/completions": "completions",
           "/v1/embeddings": "embeddings", "/v1/responses": "responses"}


class AccessLog:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in QUIET:
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        seen: dict[str, int] = {"status": 0, "bytes": 0}

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self._record(scope, seen["status"] or 499, seen["bytes"], time.monotonic() - started)

    def _record(self, scope: Scope, status: int, sent: int, elapsed: float) -> None:
        fields: dict[str, Any] = scope.get("state", {}).get("access", {})
        client = scope.get("client")
        line = {"time": round(time.time(), 3), "pid": os.getpid(), "client": client[0] if client else None,
                "method": scope["method"], "path": scope["path"], "status": status, "ms": round(elapsed * 1000, 1),
                "bytes": sent, **fields}
        endpoint = COUNTED.get(scope["path"])
        if endpoint is not None and scope["method"] == "POST":
            self.metrics.requests.labels(str(fields.get("model", "")), str(status), endpoint).inc()
        log.info(orjson.dumps(line).decode())

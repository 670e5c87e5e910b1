"""Operational endpoints: ``/healthz`` (the process answers), ``/readyz`` (Redis and the database answer)
and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from modelport.db import engine
from modelport.gateway.json_response import FastJSONResponse
from modelport.gateway.state import GatewayState
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.errors import ModelPortError


async def healthz(_request: Request) -> Response:
    return FastJSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: GatewayState = request.state.gateway
    checks = {"redis": await state.broker.ping(), "database": await engine.answers(state.sessions)}
    ready = all(checks.values())
    return FastJSONResponse({"status": "ready" if ready else "unready", "checks": checks},
                            status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    state: GatewayState = request.state.gateway
    try:
        llms = [name for name, entry in (await state.auth.catalog()).items() if entry.llm == name]
        stats = await state.broker.jobs.queue_stats(llms)
    except (*QUEUE_ERRORS, ModelPortError):
        stats = {}
    return Response(state.metrics.exposition(stats), media_type="text/plain; version=0.0.4; charset=utf-8")

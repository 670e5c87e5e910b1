"""Renders every failure as OpenAI's error envelope with the matching status; the one place it happens."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from modelport.gateway.json_response import FastJSONResponse
from modelport.protocol.errors import ErrorBody, ModelPortError

log = logging.getLogger(__name__)

HTTP_ERROR_TYPES = {404: ("invalid_request_error", "unknown_url"), 405: ("invalid_request_error", "method_not_allowed")}


def render_error(error: ErrorBody, headers: dict[str, str] | None = None) -> Response:
    """The error's envelope and status, with ``headers`` (a job's answer keeps its request id and limits)."""
    headers = {**(headers or {}), **error.headers}
    if error.retry_after is not None:
        headers["retry-after"] = str(error.retry_after)
    return FastJSONResponse(error.envelope(), status_code=error.status, headers=headers)


async def modelport_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelPortError)
    request.state.gateway.metrics.rejected.labels(exc.code or exc.type).inc()
    return render_error(exc.body())


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind, code = HTTP_ERROR_TYPES.get(exc.status_code, ("invalid_request_error", None))
    message = f"Unknown request URL: {request.method} {request.url.path}." if exc.status_code == 404 else exc.detail
    return render_error(ErrorBody(status=exc.status_code, type=kind, code=code, message=message))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return render_error(ErrorBody(status=500, type="server_error", code="internal_error",
                                  message="The server had an error while processing your request."))

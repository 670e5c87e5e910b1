"""``GET /v1/models`` and ``/v1/models/{model}``: only the models the caller's token may use."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from modelport.db.queries import ModelEntry
from modelport.gateway.json_response import FastJSONResponse
from modelport.gateway.state import GatewayState
from modelport.protocol.errors import NotFound


def _model(entry: ModelEntry) -> dict[str, Any]:
    return {"id": entry.name, "object": "model", "created": entry.created, "owned_by": "modelport"}


async def list_models(request: Request) -> Response:
    state: GatewayState = request.state.gateway
    principal = await state.auth.principal(request.headers.get("authorization"))
    catalog = await state.auth.catalog()
    data = [_model(entry) for name, entry in sorted(catalog.items()) if name in principal.models]
    return FastJSONResponse({"object": "list", "data": data})


async def retrieve_model(request: Request) -> Response:
    state: GatewayState = request.state.gateway
    principal = await state.auth.principal(request.headers.get("authorization"))
    name = request.path_params["model"]
    entry = (await state.auth.catalog()).get(name)
    if entry is None or name not in principal.models:
        raise NotFound(f"The model '{name}' does not exist or you do not have access to it.",
                       code="model_not_found", param="model")
    return FastJSONResponse(_model(entry))


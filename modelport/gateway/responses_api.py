"""The Responses API (``/v1/responses``) bridged onto chat models: a create runs as a chat job on the shared
spine; stored responses (their owner's alone, for ``GET``, ``DELETE``, ``input_items`` and
``previous_response_id``) live in Redis until the installation's ``responses_ttl_s``."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from modelport.gateway.auth import Principal
from modelport.gateway.chat import authenticated, permitted, read_body
from modelport.gateway.dispatch import JobSpec, dispatch
from modelport.gateway.json_response import FastJSONResponse
from modelport.gateway.render import BodyBuilder, StreamRenderer
from modelport.gateway.responses_render import ResponseBuilder, ResponseState, ResponseStreamRenderer
from modelport.gateway.state import GatewayState
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.errors import InvalidRequest, NotFound
from modelport.protocol.openai_wire import parse_body
from modelport.protocol.responses_wire import ResponseRequest, messages_of, new_id

log = logging.getLogger(__name__)
MAX_ITEMS_PAGE = 100
MAX_ID = 128  # the longest response id looked up (ours are 37 characters)


async def create_response(request: Request) -> ASGIApp:
    state: GatewayState = request.state.gateway
    principal = await authenticated(request)
    wanted = parse_body(ResponseRequest, await read_body(request, state.settings))
    entry = await permitted(request, principal, wanted.model, "chat", wanted.model)
    history: list[dict[str, Any]] = []
    if wanted.previous_response_id is not None:
        history = (await stored(state, principal, wanted.previous_response_id, "previous_response_id"))[
            "conversation"]
    items = wanted.items()
    params = wanted.generation_params(history, items)
    response_id = new_id("resp")
    stream = bool(wanted.stream)

    def render(_job_id: str, model: str, created: int) -> StreamRenderer | BodyBuilder:
        answer = ResponseState(response_id, model, created, wanted)
        return ResponseStreamRenderer(answer) if stream else ResponseBuilder(answer)

    async def keep(renderer: StreamRenderer | BodyBuilder) -> None:
        """Store the finished response (unless ``store`` is false) before its last bytes go out, so that a
        client may retrieve or continue it as soon as it has it."""
        result = renderer.result if isinstance(renderer, ResponseBuilder | ResponseStreamRenderer) else None
        if not wanted.store or result is None:
            return
        record = {"response": result, "input_items": items,
                  "conversation": history + messages_of(items) + messages_of(result["output"])}
        try:
            await state.broker.responses.save(response_id, principal.user_id, record, state.settings.responses_ttl_s)
        except QUEUE_ERRORS:
            log.warning("could not store response %s; it is answered, not kept", response_id)

    estimate = len(orjson.dumps(params.messages)) // 4 + 1
    reserve = wanted.max_output_tokens or state.settings.completion_reserve
    job = JobSpec("responses", params, estimate, reserve, stream, render, keep)
    return await dispatch(request, principal, entry, job, wanted.model)


async def retrieve_response(request: Request) -> Response:
    state: GatewayState = request.state.gateway
    principal = await authenticated(request)
    return FastJSONResponse((await stored(state, principal, request.path_params["response_id"]))["response"])


async def delete_response(request: Request) -> Response:
    state: GatewayState = request.state.gateway
    principal = await authenticated(request)
    response_id = request.path_params["response_id"]
    if len(response_id) > MAX_ID or not await state.broker.responses.delete(response_id, principal.user_id):
        raise not_found(response_id)
    return FastJSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


async def list_input_items(request: Request) -> Response:
    """``GET /v1/responses/{id}/input_items``: ``limit`` (1-100, 20), ``order`` (``desc`` as OpenAI, or
    ``asc``), ``after`` (an item id: the page after it)."""
    state: GatewayState = request.state.gateway
    principal = await authenticated(request)
    items: list[dict[str, Any]] = (await stored(state, principal, request.path_params["response_id"]))[
        "input_items"]
    query = request.query_params
    limit = query.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_ITEMS_PAGE:
        raise InvalidRequest(f"'limit' is a whole number from 1 to {MAX_ITEMS_PAGE}.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' is asc or desc.", param="order")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise InvalidRequest(f"No input item '{after[:128]}' in this response.", param="after")
        ordered = ordered[ids.index(after) + 1:]
    page = ordered[:int(limit)]
    return FastJSONResponse({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                             "last_id": page[-1]["id"] if page else None, "has_more": len(ordered) > len(page)})


async def stored(state: GatewayState, principal: Principal, response_id: str, param: str | None = None
                 ) -> dict[str, Any]:
    """The caller's stored response; another user's, an expired or a deleted one is a 404."""
    record = await state.broker.responses.load(response_id, principal.user_id) if len(response_id) <= MAX_ID else None
    if record is None:
        raise not_found(response_id, param)
    return record


def not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(f"No response with id '{response_id[:MAX_ID]}' found.", param=param)

"""``POST /v1/chat/completions`` and ``/v1.0/chat/completions``: body → auth → permission → queue → response."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp

from modelport import tracing
from modelport.db.queries import ModelEntry
from modelport.gateway.auth import Principal
from modelport.gateway.dispatch import JobSpec, dispatch
from modelport.gateway.json_response import FastJSONResponse
from modelport.gateway.render import BodyBuilder, ChunkRenderer, CompletionBuilder, KuwaRenderer, StreamRenderer
from modelport.gateway.settings import GatewaySettings
from modelport.gateway.state import GatewayState
from modelport.protocol.errors import InvalidRequest, PayloadTooLarge, RequestTimeout
from modelport.protocol.openai_wire import ChatCompletionRequest, parse_abort_request, parse_chat_request
from modelport.protocol.presets import bot_name, parse_botfile


async def chat_completions(request: Request) -> ASGIApp:
    """Chat completions: the caller, the model, its presets, then the shared spine (``dispatch``)."""
    state: GatewayState = request.state.gateway
    # The token is checked before the body is read: an anonymous client cannot make the gateway read and
    # parse megabytes. The model becomes a log field and a metric label only once it is known and permitted.
    principal = await authenticated(request)
    chat = parse_chat_request(await read_body(request, state.settings))
    entry = await permitted(request, principal, bot_name(chat.model) or chat.model, "chat", chat.model)
    chat = with_presets(chat, entry)
    kuwa = request.scope["path"].startswith("/v1.0/")
    stream = wants_stream(chat, request.headers.get("accept", ""), kuwa)

    def render(job_id: str, model: str, created: int) -> StreamRenderer | BodyBuilder:
        """The answer's renderer, naming the model the client asked for, or the fallback that answers."""
        if not stream:
            return CompletionBuilder(job_id, model, created, kuwa)
        return (KuwaRenderer if kuwa else ChunkRenderer)(job_id, model, created, chat.include_usage)

    reserve = chat.completion_reserve(state.settings.completion_reserve)
    job = JobSpec("chat", chat.generation_params(), chat.prompt_estimate(), reserve, stream, render)
    return await dispatch(request, principal, entry, job, chat.model)


async def abort(request: Request) -> Response:
    """``POST /v1.0/chat/abort``: cancel the caller's unfinished requests on every gateway; with a body
    ``{"ids": [...]}`` (Kuwa's client sends the job ids from ``x-request-id``), only those of them."""
    state: GatewayState = request.state.gateway
    principal = await state.auth.principal(request.headers.get("authorization"))
    job_ids = parse_abort_request(await read_body(request, state.settings)).ids
    cancelled = await state.broker.jobs.abort(principal.user_id, job_ids)
    return FastJSONResponse({"object": "chat.abort", "cancelled": cancelled})


async def authenticated(request: Request) -> Principal:
    """The caller, named in the access log (before the body is read)."""
    state: GatewayState = request.state.gateway
    with tracing.span("auth"):
        principal = await state.auth.principal(request.headers.get("authorization"))
    request.state.access = {"user": principal.user_name}
    return principal


async def permitted(request: Request, principal: Principal, model: str, kind: str, requested: str) -> ModelEntry:
    """The model's entry when the caller may use it for this endpoint's ``kind`` of job (presets, whose rules
    are a chat's, only on chat completions); it becomes the access log's and the metrics' model: the LLM (a
    bounded set), not an alias's or preset's name (which users create)."""
    state: GatewayState = request.state.gateway
    with tracing.span("permission"):
        entry = await state.auth.permitted_model(principal, model, kind)
    if entry.preset is not None and not request.scope["path"].endswith("/chat/completions"):
        raise InvalidRequest(f"The model '{model}' is a preset: presets serve /v1/chat/completions only.",
                             code="preset_not_supported", param="model")
    request.state.access["model"] = entry.llm
    if requested != entry.llm:
        request.state.access["requested"] = requested
    return entry


def with_presets(chat: ChatCompletionRequest, entry: ModelEntry) -> ChatCompletionRequest:
    """The request as its ``botfile`` (the client's own ad-hoc preset, so within the named one's rules) and
    then the preset it names make it."""
    if chat.botfile is not None:
        chat = parse_botfile(chat.botfile).apply(chat, "botfile")
    return chat if entry.preset is None else entry.preset.apply(chat, entry.name)


def wants_stream(chat: ChatCompletionRequest, accept: str, kuwa: bool) -> bool:
    """OpenAI semantics on /v1; on /v1.0 an absent ``stream`` streams unless the client asks for JSON."""
    if chat.stream is not None:
        return chat.stream
    if not kuwa:
        return False
    accepted = accept.lower()
    return not ("application/json" in accepted and "text/event-stream" not in accepted)


async def read_body(request: Request, settings: GatewaySettings) -> bytes:
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    body = bytearray()
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            async for part in request.stream():
                body += part
                if len(body) > limit:
                    raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    except ClientDisconnect:
        raise InvalidRequest("The client closed the connection before sending the whole body.") from None
    except TimeoutError:
        raise RequestTimeout(f"The request body did not arrive within {settings.body_timeout_s:g} s.") from None
    return bytes(body)

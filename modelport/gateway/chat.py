"""``POST /v1/chat/completions`` and ``/v1.0/chat/completions``: body → auth → permission → queue → response."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp

from modelport.db.queries import ModelEntry
from modelport.gateway.json_response import FastJSONResponse
from modelport.gateway.render import ChunkRenderer, CompletionBuilder, KuwaRenderer, StreamRenderer
from modelport.gateway.responses import JobResponse
from modelport.gateway.settings import GatewaySettings
from modelport.gateway.state import GatewayState
from modelport.gateway.submission import Submission
from modelport.gateway.usage import Outcome
from modelport.protocol.errors import InvalidRequest, PayloadTooLarge, RequestTimeout
from modelport.protocol.openai_wire import ChatCompletionRequest, parse_abort_request, parse_chat_request
from modelport.protocol.presets import bot_name, parse_botfile


async def chat_completions(request: Request) -> ASGIApp:
    state: GatewayState = request.state.gateway
    started = time.monotonic()
    # The token is checked before the body is read: an anonymous client cannot make the gateway read and
    # parse megabytes. The model becomes a log field and a metric label only once it is known and permitted.
    principal = await state.auth.principal(request.headers.get("authorization"))
    request.state.access = {"user": principal.user_name}
    chat = parse_chat_request(await read_body(request, state.settings))
    entry = await state.auth.permitted_model(principal, bot_name(chat.model) or chat.model)
    # The metric label is the LLM (a bounded set), not an alias's or preset's name (which users create).
    request.state.access["model"] = entry.llm
    if chat.model != entry.llm:
        request.state.access["requested"] = chat.model
    chat = with_presets(chat, entry)
    kuwa = request.url.path.startswith("/v1.0/")
    stream = wants_stream(chat, request.headers.get("accept", ""), kuwa)
    catalog = await state.auth.catalog()
    fallbacks = [catalog[name] for name in entry.fallbacks if name in catalog and name in principal.models]
    # Each deployment of the LLM gets a try (a failing one stops claiming: the next try reaches another).
    submission = Submission(state.broker.jobs, chat.generation_params(), principal, state.settings,
                            [entry] * entry.deployments + fallbacks)
    limits = state.broker.limits
    reserve = state.settings.completion_reserve
    most = max(candidate.dearest().cost(chat.prompt_estimate(), chat.completion_reserve(reserve))
               for candidate in [entry, *fallbacks])
    admission = await limits.admit(list(principal.limits), chat.token_estimate(reserve), cost=most,
                                   zone=state.settings.zone())
    try:
        handle = await submission.submit()
    except BaseException:  # refused, Redis failed, or the client left meanwhile: the admission is released
        limits.settle_soon(admission, 0, release=True)
        raise
    request.state.access["job"] = handle.job.id
    outcome = Outcome(principal=principal, job_id=handle.job.id, model=submission.served_by, stream=stream,
                      started_at=started, admission=admission)
    outcome.charge(submission.entries[submission.served_by])
    created = int(time.time())

    def render(model: str) -> StreamRenderer | CompletionBuilder:
        """The answer's renderer, naming the model the client asked for, or the fallback that answers."""
        if not stream:
            return CompletionBuilder(handle.job.id, model, created, kuwa)
        return (KuwaRenderer if kuwa else ChunkRenderer)(handle.job.id, model, created, chat.include_usage)

    # The job id is the request's id (Kuwa's client reads it here to abort the job later).
    headers = {**admission.headers, "x-request-id": handle.job.id}
    return JobResponse(handle, submission, state.usage, outcome, render, chat.model, headers)


async def abort(request: Request) -> Response:
    """``POST /v1.0/chat/abort``: cancel the caller's unfinished requests on every gateway; with a body
    ``{"ids": [...]}`` (Kuwa's client sends the job ids from ``x-request-id``), only those of them."""
    state: GatewayState = request.state.gateway
    principal = await state.auth.principal(request.headers.get("authorization"))
    job_ids = parse_abort_request(await read_body(request, state.settings)).ids
    cancelled = await state.broker.jobs.abort(principal.user_id, job_ids)
    return FastJSONResponse({"object": "chat.abort", "cancelled": cancelled})


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

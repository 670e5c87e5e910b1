"""``POST /v1/embeddings`` and the legacy ``POST /v1/completions``: body → auth → permission (a model of
the endpoint's kind) → the shared spine (``dispatch``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp

from modelport.gateway.chat import authenticated, permitted, read_body
from modelport.gateway.dispatch import JobSpec, dispatch
from modelport.gateway.endpoint_render import EmbeddingsBuilder, TextCompletionBuilder, TextCompletionRenderer
from modelport.gateway.render import BodyBuilder, StreamRenderer
from modelport.gateway.state import GatewayState
from modelport.protocol.endpoint_wire import CompletionRequest, EmbeddingRequest, estimate
from modelport.protocol.openai_wire import parse_body


async def embeddings(request: Request) -> ASGIApp:
    """Every input's vector in one job (a batch is one request to the backend), counted as its tokens."""
    state: GatewayState = request.state.gateway
    principal = await authenticated(request)
    wanted = parse_body(EmbeddingRequest, await read_body(request, state.settings))
    entry = await permitted(request, principal, wanted.model, "embedding", wanted.model)

    def render(_job_id: str, model: str, _created: int) -> BodyBuilder:
        return EmbeddingsBuilder(model, wanted.encoding_format)

    job = JobSpec("embeddings", wanted.generation_params(), estimate(wanted.inputs), 0, False, render)
    return await dispatch(request, principal, entry, job, wanted.model)


async def completions(request: Request) -> ASGIApp:
    """A legacy completion: the raw prompt(s) continued, ``n`` choices each, streamed or in one body."""
    state: GatewayState = request.state.gateway
    principal = await authenticated(request)
    wanted = parse_body(CompletionRequest, await read_body(request, state.settings))
    entry = await permitted(request, principal, wanted.model, "chat", wanted.model)
    stream = bool(wanted.stream)

    def render(job_id: str, model: str, created: int) -> StreamRenderer | BodyBuilder:
        if stream:
            return TextCompletionRenderer(job_id, model, created, wanted.include_usage)
        return TextCompletionBuilder(job_id, model, created)

    job = JobSpec("completions", wanted.generation_params(), estimate(wanted.prompts), wanted.completion_reserve(),
              stream, render)
    return await dispatch(request, principal, entry, job, wanted.model)

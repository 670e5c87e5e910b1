"""The spine every model endpoint shares once it knows the model and the job: fallbacks of the same kind,
admission against the caller's limits and budgets, the job on the fair queue, and the response that
waits on it (rendered by the endpoint's own renderer or body builder)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from modelport import tracing
from modelport.db.queries import ModelEntry
from modelport.gateway.auth import Principal
from modelport.gateway.render import BodyBuilder, StreamRenderer
from modelport.gateway.responses import JobResponse, Keep
from modelport.gateway.state import GatewayState
from modelport.gateway.submission import Submission
from modelport.gateway.usage import Outcome
from modelport.protocol.envelope import GenerationParams


@dataclass
class JobSpec:
    """What an endpoint asks of the spine: the job's parameters, its size for the limits, how it answers."""

    endpoint: str  # the usage records' and metrics' name for it: chat, completions, embeddings, responses
    params: GenerationParams
    prompt_estimate: int  # tokens the request reads, estimated
    completion_reserve: int  # tokens it may write, at most
    stream: bool
    # the answer's renderer or body builder for the job id, the model name it shows and the creation time
    render: Callable[[str, str, int], StreamRenderer | BodyBuilder]
    keep: Keep | None = None  # run on the finished answer's renderer before its last bytes go out


async def dispatch(request: Request, principal: Principal, entry: ModelEntry, job: JobSpec,
                   requested: str) -> JobResponse:
    """Admit the request, queue its job on ``entry``'s LLM (its other deployments and its fallbacks the
    caller may use after it) and answer with what the job sends; ``requested`` is the name the caller used."""
    state: GatewayState = request.state.gateway
    started = time.monotonic()
    catalog = await state.auth.catalog()
    fallbacks = [catalog[name] for name in entry.fallbacks
                 if name in catalog and name in principal.models and catalog[name].kind == entry.kind]
    # Each deployment of the LLM gets a try (a failing one stops claiming: the next try reaches another).
    submission = Submission(state.broker.jobs, job.params, principal, state.settings,
                            [entry] * entry.deployments + fallbacks)
    limits = state.broker.limits
    most = max(candidate.dearest().cost(job.prompt_estimate, job.completion_reserve)
               for candidate in [entry, *fallbacks])
    with tracing.span("admission"):
        admission = await limits.admit(list(principal.limits), job.prompt_estimate + job.completion_reserve,
                                       cost=most, zone=state.settings.zone())
        try:
            handle = await submission.submit()
        except BaseException:  # refused, Redis failed, or the client left meanwhile: the admission is released
            limits.settle_soon(admission, 0, release=True)
            raise
    request.state.access["job"] = handle.job.id
    outcome = Outcome(principal=principal, job_id=handle.job.id, model=submission.served_by, stream=job.stream,
                      started_at=started, admission=admission, endpoint=job.endpoint)
    outcome.charge(submission.entries[submission.served_by])
    created = int(time.time())
    # The job id is the request's id (Kuwa's client reads it here to abort the job later).
    headers = {**admission.headers, "x-request-id": handle.job.id}
    return JobResponse(handle, submission, state.usage, outcome,
                       lambda model: job.render(handle.job.id, model, created), requested, headers, job.keep)

"""Submitting a request's job: to the LLM it names, and while it has no first delta yet, on to the next of
that LLM's fallbacks the caller may use when the LLM cannot serve it, within the request's deadline."""

from __future__ import annotations

import time

from modelport import tracing
from modelport.broker.job_handle import JobHandle
from modelport.broker.jobs import JobQueue
from modelport.db.queries import ModelEntry
from modelport.gateway.auth import Principal
from modelport.gateway.settings import GatewaySettings
from modelport.protocol.envelope import GenerationParams
from modelport.protocol.errors import ErrorBody, ModelPortError

# What another LLM may not suffer from: no live worker, a full queue, an upstream that fails, refuses
# connections or rate-limits. Not the caller's own limits or request, and never after the first delta.
FALLBACK_CODES = frozenset({"no_worker", "queue_full", "upstream_error", "upstream_unreachable",
                            "upstream_rate_limited", "upstream_timeout", "worker_lost"})


class Submission:
    """One request's way to a job: ``candidates`` are the named LLM's entry (once per deployment), then its
    fallbacks' (those the caller may use). The first job's id names the others (``ID.1``, ...), so aborting
    by it reaches them."""

    def __init__(self, jobs: JobQueue, params: GenerationParams, principal: Principal, settings: GatewaySettings,
                 candidates: list[ModelEntry]) -> None:
        self.jobs, self.params, self.principal, self.settings = jobs, params, principal, settings
        self.candidates = candidates
        self.named = candidates[0].llm
        self.deadline = time.monotonic() + settings.job_timeout_s
        self.served_by = candidates[0].llm
        self.entries = {entry.llm: entry for entry in candidates}
        self.tries = 0
        self._first_id: str | None = None
        self.traceparent = tracing.traceparent()  # the request's span: its jobs' spans are its children

    async def submit(self) -> JobHandle:
        """The job, on the named LLM or, when that refuses it for a reason a fallback may not share, on the
        first fallback that takes it; otherwise the named LLM's refusal."""
        try:
            return await self._submit(self.candidates.pop(0))
        except ModelPortError as refused:
            handle = await self.fall_back(refused.body())
            if handle is None:
                raise
            return handle

    async def fall_back(self, error: ErrorBody) -> JobHandle | None:
        """The job on the next candidate that takes it, after the current one failed with ``error`` before
        its first delta; None when there is none (the caller reports ``error``)."""
        while self.candidates and error.code in FALLBACK_CODES and self.deadline > time.monotonic():
            try:
                return await self._submit(self.candidates.pop(0))
            except ModelPortError as refused:
                error = refused.body()
        return None

    async def _submit(self, entry: ModelEntry) -> JobHandle:
        settings, principal = self.settings, self.principal
        handle = await self.jobs.submit(
            entry.llm, self.params, user=principal.user_name, user_id=principal.user_id,
            timeout_s=self.deadline - time.monotonic(), max_queue=entry.max_queue, priority=principal.priority,
            user_share=settings.queue_user_share, group_id=principal.group_id,
            group_share=settings.queue_group_share, traceparent=self.traceparent,
            wait_for_worker=entry.scale_to_zero,
            job_id=None if self._first_id is None else f"{self._first_id}.{self.tries}")
        self.tries += 1
        self._first_id = self._first_id or handle.job.id
        self.served_by = entry.llm
        return handle

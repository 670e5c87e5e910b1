"""The worker runtime: claim jobs, stream them through a backend, publish events, ack; heartbeats,
leases, re-running jobs of dead workers, cancellation between deltas, and drain on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from opentelemetry.trace import SpanKind

from modelport import tracing
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.envelope import ENVELOPE_VERSION, Done, Failed, Usage
from modelport.protocol.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidRequest,
    ModelPortError,
    NoWorker,
    UpstreamError,
)
from modelport.workers.backends.base import Backend
from modelport.workers.broker import WorkerBroker
from modelport.workers.metrics import WorkerMetrics
from modelport.workers.outbox import ClaimedJob

log = logging.getLogger(__name__)

# An upstream failing like this makes the worker stop claiming jobs for a while (doubling while it keeps
# failing), so that the LLM's other deployments serve its queue meanwhile.
UPSTREAM_FAILURES = frozenset({"upstream_error", "upstream_unreachable", "upstream_rate_limited",
                               "upstream_timeout"})
COOLDOWN_FIRST_S = 1.0
COOLDOWN_MAX_S = 30.0
# After draining, the longest a stopping worker waits to hand its jobs' last events to Redis.
OUTBOX_FLUSH_S = 5.0


class Worker:
    """Serves one model from its queue until ``stop`` is set, then drains for at most ``drain_s``."""

    def __init__(self, broker: WorkerBroker, backend: Backend, *, heartbeat_s: float = 1.0,
                 drain_s: float = 30.0, metrics: WorkerMetrics | None = None) -> None:
        self.broker = broker
        self.backend = backend
        self.metrics = metrics or WorkerMetrics(broker.model)
        self.heartbeat_s = heartbeat_s
        self.drain_s = drain_s
        self._running: dict[str, asyncio.Task[None]] = {}
        self._claims: dict[str, ClaimedJob] = {}
        self._cancelled_by_client: set[str] = set()
        self._lost: set[str] = set()
        self._slot_freed = asyncio.Event()
        self._retiring: set[asyncio.Task[None]] = set()
        self._cooldown_s = 0.0
        self._cool_until = 0.0
        # Only an LLM with other deployments gains from a worker stepping back; alone, its jobs would wait
        # in the queue instead of failing at once (and moving on to a fallback).
        self.cools_down = False
        broker.on_cancel = self._cancel

    async def run(self, stop: asyncio.Event) -> None:
        await self.backend.start()
        await self.broker.ensure_group()
        await self.broker.heartbeat()
        helpers = [asyncio.create_task(self.broker.outbox.run()),
                   asyncio.create_task(self.broker.listen()),
                   asyncio.create_task(self._maintain())]
        log.info("worker %s serving %s", self.broker.worker_id, self.broker.model)
        try:
            await self._claim_until(stop)
            await self._drain()
            await asyncio.wait_for(self.broker.outbox.drained(), timeout=OUTBOX_FLUSH_S)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.wait(helpers, timeout=2)
            if self._retiring:
                await asyncio.wait(self._retiring, timeout=self.drain_s)
            await self.broker.close()
            await self.backend.close()

    async def replace_backend(self, backend: Backend) -> None:
        """Serve new jobs with ``backend``; the old one closes once the jobs it was running have ended."""
        await backend.start()
        old, self.backend = self.backend, backend
        started_on_old = list(self._running.values())

        async def retire() -> None:
            if started_on_old:
                await asyncio.wait(started_on_old)
            await old.close()

        task = asyncio.create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        self._slot_freed.set()  # the new backend may allow more jobs at once

    async def _claim_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            free = self.backend.concurrency - len(self._running)
            if self._cooling() or free <= 0:
                with contextlib.suppress(*QUEUE_ERRORS):
                    await self.broker.claiming_none()
            if self._cooling():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._cool_until - time.monotonic())
                continue
            if free <= 0:
                self._slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), timeout=0.5)
                continue
            try:
                claimed = await self.broker.claim(min(free, 64), free)
            except QUEUE_ERRORS:
                log.warning("queue unreachable; retrying")
                await asyncio.sleep(0.5)
                continue
            for job in claimed:
                if self._cooling():  # its upstream failed while this claim waited: another worker serves it
                    await self.broker.release(job)
                else:
                    self._start(job)
            await asyncio.sleep(0)

    def _cooling(self) -> bool:
        return self._cool_until > time.monotonic()

    def _note_failure(self, error: ModelPortError) -> None:
        """An upstream failure starts (or doubles) the cool-down; other failures are the request's own."""
        if error.code not in UPSTREAM_FAILURES or not self.cools_down:
            return
        self._cooldown_s = min(COOLDOWN_MAX_S, self._cooldown_s * 2 or COOLDOWN_FIRST_S)
        self._cool_until = time.monotonic() + self._cooldown_s
        self.metrics.cooldown.set(self._cooldown_s)
        log.warning("the upstream failed; not claiming jobs for %.0f s", self._cooldown_s)

    def _upstream_answered(self) -> None:
        if self._cooldown_s:
            self._cooldown_s = 0.0
            self.metrics.cooldown.set(0)
            log.info("the upstream answers again")

    async def _drain(self) -> None:
        if self._running:
            log.info("draining %d jobs", len(self._running))
            await asyncio.wait(list(self._running.values()), timeout=self.drain_s)
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _maintain(self) -> None:
        """Heartbeats, leases, and jobs of workers gone silent; any Redis failure (unreachable, out of
        memory, read-only during a failover) is retried at the next beat, never ends the loop."""
        while True:
            try:
                await self.broker.heartbeat()
                lost = await self.broker.renew([claimed.entry_id for claimed in self._claims.values()])
                for claimed in [claimed for claimed in self._claims.values() if claimed.entry_id in lost]:
                    self._lose(claimed.job.id)
                free = self.backend.concurrency - len(self._running)
                if free > 0 and not self._cooling():
                    for job in await self.broker.reclaim(free, running=set(self._running)):
                        self._start(job)
            except QUEUE_ERRORS:
                log.warning("heartbeat failed; retrying")
            await asyncio.sleep(self.heartbeat_s)

    def _lose(self, job_id: str) -> None:
        """Another worker took the job over while this one stalled: stop it here at once."""
        task = self._running.get(job_id)
        if task is not None:
            log.warning("another worker took job %s over; stopping it here", job_id, extra={"job": job_id})
            self._lost.add(job_id)
            task.cancel()

    def _start(self, claimed: ClaimedJob) -> None:
        job_id = claimed.job.id
        self._claims[job_id] = claimed
        task = asyncio.create_task(self._serve(claimed))
        self._running[job_id] = task
        task.add_done_callback(lambda _: self._finished(job_id))
        self.metrics.running.set(len(self._running))

    def _finished(self, job_id: str) -> None:
        self._running.pop(job_id, None)
        self._claims.pop(job_id, None)
        self._cancelled_by_client.discard(job_id)
        self._lost.discard(job_id)
        self._slot_freed.set()
        self.metrics.running.set(len(self._running))

    def _cancel(self, job_id: str) -> None:
        task = self._running.get(job_id)
        if task is not None:
            self._cancelled_by_client.add(job_id)
            task.cancel()

    async def _serve(self, claimed: ClaimedJob) -> None:
        """Run a claimed job, traced as part of its request's trace when the gateway traced it."""
        if not tracing.enabled():
            return await self._run(claimed)
        job = claimed.job
        parent = tracing.continued({"traceparent": job.traceparent}) if job.traceparent else None
        attributes = {"modelport.job": job.id, "modelport.model": job.model, "modelport.attempt": str(claimed.attempt)}
        if job.queued_ms:
            tracing.record_since("queue wait", job.queued_ms, parent=parent, attributes=attributes)
        with tracing.span("worker claim", kind=SpanKind.CONSUMER, parent=parent, attributes=attributes):
            await self._run(claimed)

    async def _run(self, claimed: ClaimedJob) -> None:
        job, outbox = claimed.job, self.broker.outbox
        fields = {"job": job.id, "model": job.model, "user": job.user}
        try:
            self._check_runnable(claimed)
        except ModelPortError as exc:
            outbox.put(claimed, Failed(error=exc.body()))
            return
        started = time.monotonic()
        try:
            done = await (self._embed(claimed) if job.params.task == "embedding" else self._generate(claimed))
            self._upstream_answered()
            outbox.put(claimed, done)
            self.metrics.finished("done", done.usage.completion_tokens if done.usage else claimed.produced)
            log.info("job done in %.0f ms", (time.monotonic() - started) * 1000, extra=fields)
        except asyncio.CancelledError:
            self._after_cancel(claimed)
            if job.id not in self._cancelled_by_client and job.id not in self._lost:
                raise
        except ModelPortError as exc:
            self._note_failure(exc)  # before the gateway hears of it and may submit the job again
            outbox.put(claimed, Failed(error=exc.body(), usage=Usage(completion_tokens=claimed.produced)))
            self.metrics.finished("cancelled" if isinstance(exc, Cancelled) else "failed", claimed.produced)
        except Exception:
            log.exception("backend failed", extra=fields)
            outbox.put(claimed, Failed(error=UpstreamError("The model backend failed unexpectedly.").body(),
                                       usage=Usage(completion_tokens=claimed.produced)))
            self.metrics.finished("failed", claimed.produced)

    async def _generate(self, claimed: ClaimedJob) -> Done:
        """Publish a chat's or a completion's deltas as the backend makes them; the job's last event."""
        usage: Usage | None = None
        with tracing.span("upstream", kind=SpanKind.CLIENT, attributes=self._upstream_attributes()) as span:
            async for item in self.backend.stream(claimed.job.params):
                if claimed.produced == 0 and await claimed.was_cancelled_early():
                    raise Cancelled("The client cancelled the request before it started.")
                if isinstance(item, Usage):
                    usage = item
                else:
                    first = claimed.produced == 0
                    claimed.produced += item.pieces
                    self.broker.outbox.put(claimed, item)
                    if first:
                        await self.broker.outbox.written()
            tracing.annotate(span, **{"modelport.deltas": claimed.produced})
        return Done(usage=usage or Usage(completion_tokens=claimed.produced))

    async def _embed(self, claimed: ClaimedJob) -> Done:
        """An embedding job's one event: its vectors and usage."""
        with tracing.span("upstream", kind=SpanKind.CLIENT, attributes=self._upstream_attributes()):
            embedded = await self.backend.embed(claimed.job.params)
        if await claimed.was_cancelled_early():
            raise Cancelled("The client cancelled the request before it started.")
        return Done(usage=embedded.usage, embeddings=embedded.vectors)

    def _upstream_attributes(self) -> dict[str, str]:
        return {"modelport.backend": type(self.backend).__name__}

    def _check_runnable(self, claimed: ClaimedJob) -> None:
        if claimed.job.v != ENVELOPE_VERSION:
            raise InvalidRequest(f"This worker speaks envelope version {ENVELOPE_VERSION}, not {claimed.job.v}.",
                                 code="version_mismatch")
        if claimed.job.deadline_ms < time.time() * 1000:
            raise DeadlineExceeded("The request's deadline passed while it waited in the queue.")

    def _after_cancel(self, claimed: ClaimedJob) -> None:
        produced = claimed.produced
        usage = Usage(completion_tokens=produced)
        if claimed.job.id in self._lost:
            # If its text already reached the client, the gateway follows this run and the new one's is
            # dropped: end it cleanly. If not, the gateway follows the new run: say nothing.
            if claimed.has_published_text:
                lost = NoWorker("The worker serving this request stalled and lost it mid-stream.", code="worker_lost")
                self.broker.outbox.put(claimed, Failed(error=lost.body(), usage=usage))
            self.metrics.finished("lost", produced)
        elif claimed.job.id in self._cancelled_by_client:
            log.info("job cancelled after %d deltas", produced, extra={"job": claimed.job.id})
            self.metrics.finished("cancelled", produced)
            self.broker.outbox.put(claimed, Failed(error=Cancelled("Cancelled by the client.").body(), usage=usage))
        elif claimed.has_published_text:
            error = UpstreamError("The worker shut down mid-stream.", code="worker_shutdown")
            self.broker.outbox.put(claimed, Failed(error=error.body(), usage=usage))
        else:
            log.info("leaving unstarted job %s for another worker", claimed.job.id)

"""Submitting a gateway's jobs and following each to its end."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from typing import Any

from redis.asyncio import Redis

from modelport.broker.batches import Batcher, run_scripts
from modelport.broker.job_handle import JobHandle
from modelport.protocol import keys, scripts
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.envelope import GenerationParams, Job
from modelport.protocol.errors import Cancelled, DeadlineExceeded, ModelPortError, NoWorker, RateLimited, Unavailable
from modelport.protocol.registrations import deployment_of
from modelport.protocol.scripts import Submitted

log = logging.getLogger(__name__)



class JobQueue:
    """Submits a gateway's jobs and follows each to its end: fair-queue position, cancellation, aborting a
    user's jobs, deadlines, the leases of what its live jobs hold, and failing them when their model's last
    worker stops."""

    def __init__(self, commands: Redis, inbox: str, lease_ms: int) -> None:
        self.inbox = inbox
        self._commands = commands
        self._lease_ms = lease_ms
        self._submit = commands.register_script(scripts.SUBMIT)
        self._live = commands.register_script(scripts.LIVE_WORKERS)
        self._withdraw = commands.register_script(scripts.WITHDRAW)
        self._position = commands.register_script(scripts.POSITION)
        self._hold = commands.register_script(scripts.HOLD)
        self._cancel = commands.register_script(scripts.CANCEL)
        self._renew_held = commands.register_script(scripts.RENEW_HELD)
        self._held = commands.register_script(scripts.HELD)
        self.handles: dict[str, JobHandle] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self._ended: list[JobHandle] = []  # ended jobs whose holds are released in the next batch
        self._batches = Batcher(commands)
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Stop the deadlines and cancel every job still running (its worker stops it)."""
        for timer in self.timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        self._batches.close()
        for handle in list(self.handles.values()):
            await self.cancel(handle)

    async def submit(self, model: str, params: GenerationParams, *, user: str, user_id: int, timeout_s: float,
                     max_queue: int, priority: int = 0, user_share: float = 1.0, group_id: int = 0,
                     group_share: float = 1.0, job_id: str | None = None,
                     traceparent: str | None = None, wait_for_worker: bool = False) -> JobHandle:
        """Queue a job atomically: 503 without a live worker, 429 when the model's queue is full or the user
        already holds ``user_share`` of it (their group, ``group_share``). Under contention it waits in the
        model's fair queue (``handle.position`` says where). ``job_id`` names a fallback's job after the
        request's first (``ID.N``), so that aborting the request by its id reaches it; ``traceparent`` names
        the request's span when it is traced. ``wait_for_worker`` (a model that scales to zero) queues the job
        even while no worker is live: one is starting for it, or it ends at its deadline."""
        now = time.time()
        job = Job(id=job_id or f"chatcmpl-{uuid.uuid4().hex}", model=model, params=params, reply_to=self.inbox,
                  deadline_ms=int((now + timeout_s) * 1000), user=user, user_id=user_id, queued_ms=int(now * 1000),
                  traceparent=traceparent, batches=True)
        handle = JobHandle(job, self._forget, group_id, wait_for_worker)
        self.handles[job.id] = handle
        user_places = max(1, math.ceil(max_queue * user_share))
        group_places = max(1, math.ceil(max_queue * group_share)) if group_id else max_queue
        try:
            outcome, queued_as = await self._enqueue(handle, max_queue, priority, user_places, group_places,
                                                     wait_for_worker)
        except QUEUE_ERRORS:
            self._forget(handle)
            raise NoWorker("The job queue is unreachable; try again shortly.", code="queue_unavailable") from None
        if outcome < 0:
            self._forget(handle)
            if outcome == Submitted.NO_WORKER:
                raise NoWorker(f"No worker is serving the model '{model}' right now.")
            if outcome == Submitted.SHARE_USED:
                raise RateLimited(f"You already have {user_places} unfinished requests for model '{model}', your "
                                  "share of its queue; retry when one ends.", code="queue_share_exceeded",
                                  retry_after=1)
            if outcome == Submitted.GROUP_SHARE_USED:
                raise RateLimited(f"Your group already has {group_places} unfinished requests for model '{model}', its "
                                  "share of the queue; retry when one ends.", code="queue_share_exceeded",
                                  retry_after=1)
            raise RateLimited(f"The queue for model '{model}' is full; retry shortly.",
                              code="queue_full", retry_after=1)
        handle.position = outcome
        handle.queued_as = queued_as
        if not handle.finished:  # a fast worker may have answered already
            self.timers[job.id] = asyncio.get_running_loop().call_later(timeout_s, self._expire, handle)
        return handle

    async def position(self, handle: JobHandle) -> int:
        """The job's place in its model's fair queue now; 0 once it has left it."""
        if handle.queued_as is None or handle.started:
            return 0
        rotation, waiting_jobs, bodies, _turn, _waiting = keys.fair_queue(handle.job.model)
        return int(await self._position(keys=[rotation, waiting_jobs, bodies],
                                        args=[*handle.queued_as, handle.job.id]))

    async def _enqueue(self, handle: JobHandle, max_queue: int, priority: int, user_places: int,
                       group_places: int, wait_for_worker: bool) -> tuple[int, tuple[str, str] | None]:
        """SUBMIT and the in-flight record, sent with the other jobs submitted in the same turn of the loop."""
        job = handle.job
        script_keys = [keys.workers(job.model), keys.jobs(job.model), *keys.fair_queue(job.model),
                       keys.user_jobs(job.model, job.user_id), keys.group_jobs(job.model, handle.group_id),
                       keys.waiting_since(job.model), keys.free_slots(job.model)]
        args: list[str | int] = [max_queue, job.model_dump_json(), job.id, job.user_id, priority, user_places,
                                 self._lease_ms, group_places, int(wait_for_worker)]

        (outcome, member, entry, *live), _ = await self._batches.call(
            (self._submit, (*script_keys, *args), len(script_keys)),
            (self._hold, (keys.in_flight(job.user_id), self._lease_ms, job.id), 1))
        handle.awaits_first_worker = bool(live) and int(live[0]) == 0
        return int(outcome), (member.decode(), entry.decode()) if int(outcome) > 0 else None

    async def abort(self, user_id: int, job_ids: list[str] | None = None) -> int:
        """Cancel the unfinished jobs of a user (those of ``job_ids`` only, when given, with their fallbacks'
        jobs; ids of other users' jobs or of ended ones are ignored), on whichever gateway each was submitted."""
        try:
            members = await self._held(keys=[keys.in_flight(user_id)])
            held = [job_id.decode() if isinstance(job_id, bytes) else job_id for job_id in members]
            wanted = set(job_ids or ())
            chosen = held if job_ids is None else [job_id for job_id in held if job_id.partition(".")[0] in wanted]
            await self._mark_cancelled(chosen)
        except QUEUE_ERRORS:
            raise Unavailable("The job queue is unreachable; try again shortly.", code="queue_unavailable") from None
        return len(chosen)

    async def queue_stats(self, models: list[str]) -> dict[str, tuple[int, Counter[str]]]:
        """Outstanding jobs (waiting in the fair queue, in the stream or running) and live workers by
        deployment, per model, for metrics (and the autoscalers that read them)."""
        seconds, micros = await self._commands.time()
        now_ms = seconds * 1000 + micros // 1000
        async with self._commands.pipeline(transaction=False) as pipe:
            for model in models:
                pipe.xlen(keys.jobs(model))
                pipe.get(keys.fair_queue(model)[4])
                pipe.zrangebyscore(keys.workers(model), now_ms, "+inf")
            replies = await pipe.execute()
        stats = {}
        for i, model in enumerate(models):
            in_stream, waiting, workers = replies[3 * i:3 * i + 3]
            stats[model] = (int(in_stream) + max(0, int(waiting or 0)),
                            Counter(deployment_of(worker.decode() if isinstance(worker, bytes) else str(worker))
                                    for worker in workers))
        return stats

    async def cancel(self, handle: JobHandle) -> None:
        """Tell whichever worker has the job (or will claim it) to stop; the handle stays until it ends."""
        try:
            await self._mark_cancelled([handle.job.id])
        except QUEUE_ERRORS:
            log.warning("could not publish the cancellation of job %s", handle.job.id)

    async def _mark_cancelled(self, job_ids: list[str]) -> None:
        """Mark the jobs cancelled (for a worker that claims one later) and tell the workers now, in one round
        trip: a CANCEL script each, since on a Redis Cluster a pipeline may not publish."""
        if not job_ids:
            return
        replies = await run_scripts(self._commands, [
            (self._cancel, (keys.cancelled(job_id), keys.CANCEL_CHANNEL, job_id), 1) for job_id in job_ids])
        failed = next((reply for reply in replies if isinstance(reply, Exception)), None)
        if failed is not None:
            raise failed

    async def live_workers(self, model: str) -> int:
        return int(await self._live(keys=[keys.workers(model)]))

    def withdraw_if_waiting(self, job_id: str) -> None:
        """A cancelled job of this gateway that still waits in its model's fair queue ends now, instead of
        when a worker reaches it (behind other users' jobs, that can take long)."""
        handle = self.handles.get(job_id)
        if handle is not None:
            self._withdraw_waiting(handle)

    def _withdraw_waiting(self, handle: JobHandle) -> None:
        """Take the job out of its model's fair queue if it still waits there (then it ends as cancelled,
        unless it has ended already), so it neither reaches a worker nor counts against the queue bound."""
        if handle.queued_as is None or handle.started:
            return
        _rotation, _waiting_jobs, bodies, _turn, waiting = keys.fair_queue(handle.job.model)

        async def withdraw() -> None:
            if await self._withdraw(keys=[bodies, waiting, keys.waiting_since(handle.job.model)],
                                    args=[handle.job.id]):
                handle.fail(Cancelled("Cancelled by the client while queued.").body())

        self._background(withdraw())

    def _forget(self, handle: JobHandle) -> None:
        """The job has ended (or was refused): release what it held. This may run before ``submit`` has
        resumed, when a fast worker's answer arrives first, so it does not depend on anything submit does after
        SUBMIT returns."""
        job = handle.job
        if self.handles.pop(job.id, None) is not None:
            self._ended.append(handle)
            if len(self._ended) == 1:
                self._background(self._release_ended())
        timer = self.timers.pop(handle.job.id, None)
        if timer is not None:
            timer.cancel()

    async def _release_ended(self) -> None:
        """Jobs have ended: they no longer count as their users' (for aborting), nor against their users' and
        groups' shares of the queue. The jobs that end in one turn of the event loop (one inbox batch, under
        load many) are released together, one ZREM per key, in one round trip."""
        await asyncio.sleep(0)
        ended, self._ended = self._ended, []
        members: dict[str, list[str]] = {}
        for handle in ended:
            job = handle.job
            for key in (keys.in_flight(job.user_id), keys.user_jobs(job.model, job.user_id),
                        keys.group_jobs(job.model, handle.group_id)):
                members.setdefault(key, []).append(job.id)
        async with self._commands.pipeline(transaction=False) as pipe:
            for key, job_ids in members.items():
                pipe.zrem(key, *job_ids)
            await pipe.execute()

    def _background(self, command: Awaitable[Any]) -> None:
        """A bookkeeping command that must not delay the request (its failure only logs)."""
        async def run() -> None:
            try:
                await command
            except QUEUE_ERRORS:
                log.warning("bookkeeping command failed")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _expire(self, handle: JobHandle) -> None:
        self._abandon(handle, DeadlineExceeded("The model did not finish before the request's deadline."))

    def _abandon(self, handle: JobHandle, error: ModelPortError) -> None:
        """End a job at the gateway, take it out of the fair queue if it waits there, and tell its worker, if
        any, to stop."""
        handle.fail(error.body())
        self._withdraw_waiting(handle)
        self._background(self.cancel(handle))

    def fail_all(self, error: ModelPortError, model: str | None = None) -> None:
        for handle in list(self.handles.values()):
            if model is None or handle.job.model == model:
                self._abandon(handle, error)

    async def renew_leases(self) -> None:
        """Extend by a lease what this process holds for its live jobs: their in-flight entries and their
        places in their users' and groups' queue shares."""
        held: dict[str, list[str]] = {}
        for handle in list(self.handles.values()):
            job = handle.job
            for key in (keys.in_flight(job.user_id), keys.user_jobs(job.model, job.user_id),
                        keys.group_jobs(job.model, handle.group_id)):
                held.setdefault(key, []).append(job.id)
        for key, members in held.items():
            await self._renew_held(keys=[key], args=[self._lease_ms, *members])

    async def fail_orphans(self) -> None:
        """Fail fast the jobs of models whose last worker stopped (not those of a model that scales to zero:
        they wait for the worker their queue starts, until their deadline)."""
        by_model: dict[str, list[JobHandle]] = {}
        for handle in self.handles.values():
            if not handle.waits_for_worker:
                by_model.setdefault(handle.job.model, []).append(handle)
        for model, handles in by_model.items():
            if await self.live_workers(model) == 0:
                for handle in handles:
                    self._abandon(handle, NoWorker(f"The last worker serving '{model}' stopped."))

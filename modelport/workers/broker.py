"""The worker side of the queue: heartbeats, claiming, leases, re-running jobs of dead workers, cancels."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from pydantic import ValidationError
from redis.exceptions import NoScriptError, ResponseError

from modelport.protocol import keys, scripts
from modelport.protocol.connection import QUEUE_ERRORS, RedisAddress, redis_client
from modelport.protocol.envelope import VERDICT, Failed, Job
from modelport.protocol.errors import ModelPortError, NoWorker
from modelport.protocol.registrations import NotRegistered, Registration
from modelport.workers.outbox import ClaimedJob, Outbox

log = logging.getLogger(__name__)


class WorkerBroker:
    """Every queue command a worker issues, for one model."""

    def __init__(self, redis_url: RedisAddress, model: str, worker_id: str, *, lease_ms: int = 3000,
                 max_attempts: int = 3) -> None:
        self.model = model
        self.worker_id = worker_id
        self.lease_ms = lease_ms
        self.max_attempts = max_attempts
        self._jobs_key = keys.jobs(model)
        self._claimer = redis_client(redis_url, connections=1, name=f"mp-worker-{worker_id}-claim")
        self._commands = redis_client(redis_url, connections=2, name=f"mp-worker-{worker_id}")
        self._subscriber = redis_client(redis_url, connections=1, name=f"mp-worker-{worker_id}-sub",
                                        socket_timeout=30.0)
        self._heartbeat = self._commands.register_script(scripts.HEARTBEAT)
        self._dispatch = self._commands.register_script(scripts.DISPATCH)
        self._background: set[asyncio.Task[None]] = set()
        self._says_free = 0  # the free slots this worker last recorded
        self._reclaim_from = "0-0"  # XAUTOCLAIM looks at ten entries per job it may take: it resumes there
        self.on_cancel: Callable[[str], None] = lambda job_id: None
        self.on_announcement: Callable[[], None] = lambda: None
        self._renew = self._commands.register_script(scripts.RENEW)
        self.outbox = Outbox(self._commands, model, worker_id, self._cancel_locally)

    async def close(self) -> None:
        """Leave the model's live workers, and its consumer group too when this worker holds no entry."""
        with contextlib.suppress(*QUEUE_ERRORS):
            await self._commands.zrem(keys.workers(self.model), self.worker_id)
            await self._commands.hdel(keys.free_slots(self.model), self.worker_id)
            pending = await self._commands.xpending_range(self._jobs_key, keys.WORKER_GROUP, "-", "+", 1,
                                                          consumername=self.worker_id)
            if not pending:
                await self._commands.xgroup_delconsumer(self._jobs_key, keys.WORKER_GROUP, self.worker_id)
        for client in (self._claimer, self._commands, self._subscriber):
            await client.aclose()

    async def heartbeat(self) -> None:
        await self._heartbeat(keys=[keys.workers(self.model), keys.heartbeats(self.model), keys.free_slots(self.model)],
                              args=[self.worker_id, self.lease_ms])

    async def ensure_group(self) -> None:
        with contextlib.suppress(ResponseError):
            await self._commands.xgroup_create(self._jobs_key, keys.WORKER_GROUP, id="0", mkstream=True)

    async def claim(self, count: int, free: int | None = None, block_ms: int = 250) -> list[ClaimedJob]:
        """Up to ``count`` new jobs for this worker, waiting up to ``block_ms`` for one; first, jobs waiting in
        the fair queue are moved into the stream for them, and the ``free`` slots this worker has (``count``
        unless said) are recorded: jobs submitted while it waits go straight to the stream. Both go in one
        round trip on the claiming connection; an error of one does not hide what the other read."""
        free = count if free is None else free
        self._says_free = free
        dispatch_keys = [self._jobs_key, *keys.fair_queue(self.model), keys.waiting_since(self.model),
                         keys.free_slots(self.model)]
        async with self._claimer.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._dispatch.sha, len(dispatch_keys), *dispatch_keys, count, self.worker_id, free)
            pipe.xreadgroup(keys.WORKER_GROUP, self.worker_id, {self._jobs_key: ">"}, count=count, block=block_ms)
            dispatched, reply = await pipe.execute(raise_on_error=False)
        if isinstance(dispatched, NoScriptError):
            await self._claimer.script_load(scripts.DISPATCH)
        elif isinstance(dispatched, Exception):  # the next claim moves them; what the read took runs now
            log.warning("could not move waiting jobs to the stream: %s", dispatched)
        if isinstance(reply, ResponseError) and "NOGROUP" in str(reply):
            await self.ensure_group()
            return []
        if isinstance(reply, Exception):
            raise reply
        entries = reply[0][1] if reply else []
        claimed = [claimed for claimed in (self._decode(entry_id, fields, 1) for entry_id, fields in entries)
                   if claimed is not None]
        self._ask_cancelled(claimed)
        return claimed

    async def claiming_none(self) -> None:
        """This worker takes no jobs for now (its slots are full, or it cools down): submitted jobs stop
        counting on it and wait in the fair queue."""
        if self._says_free:
            await self._commands.hset(keys.free_slots(self.model), self.worker_id, 0)
            self._says_free = 0

    async def renew(self, entry_ids: list[str]) -> set[str]:
        """Extend the lease of the jobs this worker runs and still owns (idle time reset, attempt count kept);
        returns the entries it no longer owns: another worker took them over while this one stalled."""
        if not entry_ids:
            return set()
        lost = await self._renew(keys=[self._jobs_key], args=[self.worker_id, *entry_ids])
        return {entry.decode() if isinstance(entry, bytes) else str(entry) for entry in lost}

    async def reclaim(self, count: int, running: Collection[str] = ()) -> list[ClaimedJob]:
        """Take over jobs whose worker stopped renewing; started ones end with an error, never re-run, and
        neither are jobs that ended meanwhile or that this worker itself runs (its own loop stalled)."""
        try:
            reply: Any = await self._commands.xautoclaim(self._jobs_key, keys.WORKER_GROUP, self.worker_id,
                                                    self.lease_ms, self._reclaim_from, count=count)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        cursor = reply[0]
        self._reclaim_from = cursor.decode() if isinstance(cursor, bytes) else str(cursor)  # "0-0": scan again
        if self._reclaim_from == "0-0":
            await self._sweep_consumers()
        runnable: list[ClaimedJob] = []
        for entry_id, fields in reply[1]:
            attempt = await self._attempts(entry_id)
            claimed = self._decode(entry_id, fields, attempt or 1)
            if claimed is None or attempt is None or claimed.job.id in running:
                continue
            if await self._commands.hexists(keys.started(self.model), claimed.job.id):
                log.warning("job %s lost its worker mid-stream", claimed.job.id, extra={"job": claimed.job.id})
                self.fail(claimed, NoWorker("The worker serving this request stopped mid-stream.",
                                            code="worker_lost"))
            elif attempt > self.max_attempts:
                self.fail(claimed, NoWorker(f"The job was attempted {self.max_attempts} times and its worker "
                                            "died each time.", code="worker_lost"))
            else:
                log.info("re-running job %s (attempt %d)", claimed.job.id, attempt, extra={"job": claimed.job.id})
                runnable.append(claimed)
        self._ask_cancelled(runnable)
        return runnable

    async def release(self, claimed: ClaimedJob) -> None:
        """Give back a job this worker claimed but will not start (its upstream is cooling down): marked idle
        for a whole lease, another worker's reclaim takes it over at its next beat, as after a death."""
        await self._commands.xclaim(self._jobs_key, keys.WORKER_GROUP, self.worker_id, 0, [claimed.entry_id],
                                    idle=self.lease_ms, justid=True)

    async def _sweep_consumers(self) -> None:
        """Delete consumers of workers that died (idle for ten leases) once they hold no entry; a clean exit
        deletes its own (see close)."""
        for consumer in await self._commands.xinfo_consumers(self._jobs_key, keys.WORKER_GROUP):
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else str(consumer["name"])
            if name != self.worker_id and not consumer["pending"] and consumer["idle"] > 10 * self.lease_ms:
                await self._commands.xgroup_delconsumer(self._jobs_key, keys.WORKER_GROUP, name)

    def _ask_cancelled(self, claimed: list[ClaimedJob]) -> None:
        """Ask whether the client cancelled each job while it was queued, for the whole batch in one round
        trip; each job's ``cancelled_early`` says it (or holds the queue's failure)."""
        loop = asyncio.get_running_loop()
        for job in claimed:
            job.cancelled_early = loop.create_future()

        async def ask() -> None:
            answers: list[Any] | BaseException
            try:
                async with self._commands.pipeline(transaction=False) as pipe:
                    for job in claimed:
                        pipe.exists(keys.cancelled(job.job.id))
                    answers = await pipe.execute()
            except QUEUE_ERRORS as exc:
                answers = exc
            for i, job in enumerate(claimed):
                future = job.cancelled_early
                if future is None or future.done():
                    continue
                if isinstance(answers, BaseException):
                    future.set_exception(answers)
                    future.exception()  # a job that ended before asking does not leave it unretrieved
                else:
                    future.set_result(bool(answers[i]))

        if claimed:  # asked once the jobs' own tasks have begun (their upstream requests go out first)
            loop.call_soon(self._spawn, ask())

    def fail(self, claimed: ClaimedJob, error: ModelPortError) -> None:
        """End a job this worker took over with a verdict, which the gateway takes whichever run it follows."""
        verdict = ClaimedJob(entry_id=claimed.entry_id, job=claimed.job, attempt=VERDICT)
        self.outbox.put(verdict, Failed(error=error.body()))

    async def listen(self) -> None:
        """Follow cancellations, and announced changes (also after each reconnect, since changes may have
        been missed meanwhile) for ``on_announcement``."""
        while True:
            try:
                async with self._subscriber.pubsub() as pubsub:
                    await pubsub.subscribe(keys.CANCEL_CHANNEL, keys.INVALIDATE_CHANNEL)
                    self.on_announcement()
                    async for message in pubsub.listen():
                        if message["type"] != "message":
                            continue
                        if message["channel"] == keys.CANCEL_CHANNEL.encode():
                            self._cancel_locally(message["data"].decode())
                        else:
                            self.on_announcement()
            except QUEUE_ERRORS:
                await asyncio.sleep(0.5)

    async def registration(self) -> Registration | None:
        """This model's registration as mirrored in Redis; None while there is no mirror at all (nothing
        registered yet, or Redis lost it and no gateway has restored it); NotRegistered when the mirror does
        not list the model."""
        async with self._commands.pipeline(transaction=False) as pipe:
            pipe.exists(keys.REGISTRATIONS)
            pipe.hget(keys.REGISTRATIONS, self.model)
            exists, raw = await pipe.execute()
        if not exists:
            return None
        try:
            if raw is None:
                raise NotRegistered(f"no LLM named {self.model!r} is registered")
            return Registration.model_validate_json(raw)
        except ValidationError as exc:
            raise NotRegistered(f"the registration of {self.model!r} in Redis is unreadable: {exc}") from None

    def _cancel_locally(self, job_id: str) -> None:
        self.on_cancel(job_id)

    async def _attempts(self, entry_id: str) -> int | None:
        """How often the entry was delivered; None when it is no longer pending (its job ended meanwhile)."""
        pending = await self._commands.xpending_range(self._jobs_key, keys.WORKER_GROUP, entry_id, entry_id, 1)
        return int(pending[0]["times_delivered"]) if pending else None

    def _decode(self, entry_id: bytes | str, fields: dict[bytes, bytes] | None, attempt: int) -> ClaimedJob | None:
        entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        try:
            job = Job.model_validate_json((fields or {})[b"job"])
        except (KeyError, ValidationError):
            log.error("dropping unreadable queue entry %s", entry)
            self._drop(entry)
            return None
        return ClaimedJob(entry_id=entry, job=job, attempt=attempt)

    def _drop(self, entry_id: str) -> None:
        async def drop() -> None:
            with contextlib.suppress(*QUEUE_ERRORS):
                await self._commands.xack(self._jobs_key, keys.WORKER_GROUP, entry_id)
                await self._commands.xdel(self._jobs_key, entry_id)

        self._spawn(drop())

    def _spawn(self, command: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(command)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

"""A worker's batched publisher: events of all its jobs go to Redis in one pipeline per flush.

While one pipeline is in flight, new events wait; consecutive deltas of a job are merged, so a burst
costs one event instead of many, and nothing is reordered or dropped; the events for one gateway go in
one inbox entry per flush (to a gateway of an earlier build, one entry each). Every event carries the attempt
that produced it and its place in the job's sequence: a batch re-sent after a timeout (which Redis may
have executed after all) is re-sent unchanged, and the gateway drops what it has already seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, FieldT

from modelport.protocol import keys, scripts
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.envelope import (
    ENVELOPE_VERSION,
    Delta,
    Done,
    Event,
    Failed,
    Job,
    Published,
    encode_batch,
    encode_event,
)
from modelport.protocol.registrations import deployment_of

log = logging.getLogger(__name__)

@dataclass
class ClaimedJob:
    """A job a worker holds: its stream entry, its envelope and how often it was delivered (its attempt)."""

    entry_id: str
    job: Job
    attempt: int
    marked_started: bool = False
    pending: list[Event] = field(default_factory=list)
    published: int = 0  # sequence number of the last event handed to Redis
    unconfirmed: list[tuple[int, Event]] = field(default_factory=list)  # sent, but Redis did not confirm
    produced: int = 0  # deltas the backend produced in this run (about a token each)
    cancelled_early: asyncio.Future[bool] | None = None  # whether the client cancelled it while it was queued

    async def was_cancelled_early(self) -> bool:
        """Whether the client cancelled the job while it was queued (asked when it was claimed; awaited with
        its first token, not before it)."""
        return self.cancelled_early is not None and await self.cancelled_early

    @property
    def has_published_text(self) -> bool:
        return self.marked_started or any(isinstance(event, Delta) for event in self.pending)


class Outbox:
    """Collects events per job and flushes them (with acks for finished jobs) in pipelines."""

    def __init__(self, redis: Redis, model: str, consumer: str, on_gateway_gone: Callable[[str], None]) -> None:
        self._redis = redis
        self._model = model
        self._consumer = consumer
        self._deployment = deployment_of(consumer)
        self._finish = redis.register_script(scripts.FINISH)
        self._mark_started = redis.register_script(scripts.MARK_STARTED)
        self._on_gateway_gone = on_gateway_gone
        self._waiting: dict[str, ClaimedJob] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._flushes_begun = 0
        self._flushes_done = 0
        self._flushed = asyncio.Condition()

    def put(self, claimed: ClaimedJob, event: Event) -> None:
        """Queue an event of the job; its end says which deployment ran it (for the gateway's prices)."""
        if isinstance(event, Done | Failed):
            event = event.model_copy(update={"deployment": self._deployment})
        last = claimed.pending[-1] if claimed.pending else None
        if isinstance(event, Delta) and isinstance(last, Delta):
            last.absorb(event)
        else:
            claimed.pending.append(event)
        self._waiting[claimed.entry_id] = claimed
        self._idle.clear()
        self._wake.set()

    async def written(self) -> None:
        """Wait until the events put so far are in Redis. A job awaits this after its first token, so the
        rest of its stream (already buffered, say) cannot hold the first one back."""
        target = self._flushes_begun + 1
        async with self._flushed:
            await self._flushed.wait_for(lambda: self._flushes_done >= target)

    async def drained(self) -> None:
        """Wait until everything put so far has been written."""
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._waiting = self._waiting, {}
            for claimed in batch.values():
                for event in claimed.pending:
                    claimed.published += 1
                    claimed.unconfirmed.append((claimed.published, event))
                claimed.pending = []
            self._flushes_begun += 1
            try:
                await self._flush(batch)
            except NoScriptError:
                for script in (scripts.MARK_STARTED, scripts.FINISH):
                    await self._redis.script_load(script)
                self._retry_later(batch)
                continue
            except QUEUE_ERRORS:
                log.warning("could not publish events; re-sending them unchanged")
                self._retry_later(batch)
                await asyncio.sleep(0.2)
                continue
            async with self._flushed:
                self._flushes_done = self._flushes_begun
                self._flushed.notify_all()
            if not self._waiting:
                self._idle.set()

    def _retry_later(self, batch: dict[str, ClaimedJob]) -> None:
        """The batch stays as it was sent (same events, same sequence numbers) and goes again first."""
        for entry_id, claimed in batch.items():
            self._waiting.setdefault(entry_id, claimed)
        self._wake.set()

    async def _flush(self, batch: dict[str, ClaimedJob]) -> None:
        """One pipeline: jobs whose first delta goes out are marked started, then the events are published
        (to a gateway that reads batches, all of them in one entry; otherwise one entry each), then the jobs
        whose last event went out are acknowledged."""
        jobs_key, started_key = keys.jobs(self._model), keys.started(self._model)
        publishes: list[tuple[int, list[ClaimedJob]]] = []  # each XADD's place in the pipeline, and its jobs
        batches: dict[str, tuple[list[ClaimedJob], list[Published]]] = {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id, claimed in batch.items():
                job = claimed.job
                if not claimed.marked_started and any(isinstance(event, Delta) for _, event in claimed.unconfirmed):
                    pipe.evalsha(self._mark_started.sha, 2, jobs_key, started_key, entry_id, self._consumer, job.id)
                if job.batches:
                    claims, records = batches.setdefault(job.reply_to, ([], []))
                    claims.append(claimed)
                    records.extend((job.id, claimed.attempt, sequence, event)
                                   for sequence, event in claimed.unconfirmed)
                    continue
                for sequence, event in claimed.unconfirmed:
                    fields: dict[FieldT, EncodableT] = {"v": ENVELOPE_VERSION, "j": job.id, "a": claimed.attempt,
                                                        "s": sequence, "e": encode_event(event)}
                    publishes.append((len(pipe), [claimed]))
                    pipe.xadd(job.reply_to, fields, nomkstream=True)
            for inbox, (claims, records) in batches.items():
                publishes.append((len(pipe), claims))
                pipe.xadd(inbox, {"v": ENVELOPE_VERSION, "b": encode_batch(records)}, nomkstream=True)
            for entry_id, claimed in batch.items():
                if any(not isinstance(event, Delta) for _, event in claimed.unconfirmed):
                    pipe.evalsha(self._finish.sha, 2, jobs_key, started_key, entry_id, self._consumer, claimed.job.id)
            results = await pipe.execute()
        for claimed in batch.values():
            claimed.marked_started |= any(isinstance(event, Delta) for _, event in claimed.unconfirmed)
            claimed.unconfirmed = []
        gone = {claimed.job.id for position, claims in publishes if results[position] is None for claimed in claims}
        for job_id in gone:
            self._on_gateway_gone(job_id)

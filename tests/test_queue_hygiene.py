"""What the queue must not leave behind, overlook or deliver twice, against a real Redis: queued jobs past
their deadline, the consumers of workers that exited, a dead worker's job far down the pending list,
re-sent and stale events, and settings that cannot work together."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from modelport.broker.gateway import GatewayBroker
from modelport.broker.job_handle import JobHandle
from modelport.protocol import keys
from modelport.protocol.envelope import (
    ENVELOPE_VERSION,
    ChoiceDelta,
    Delta,
    Done,
    Event,
    Failed,
    GenerationParams,
    Job,
    decode_batch,
    decode_event,
    encode_batch,
    encode_event,
)
from modelport.workers.backends.fake import FakeBackend, FakeConfig
from modelport.workers.broker import WorkerBroker
from modelport.workers.runtime import Worker
from modelport.workers.settings import WorkerSettings
from tests.servers import RedisServer

PARAMS = GenerationParams(messages=[{"role": "user", "content": "hi"}])


def model_name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


async def test_a_queued_job_past_its_deadline_leaves_the_queue_at_once(
        gateway: GatewayBroker, redis_server: RedisServer, probe: Redis) -> None:
    model = model_name()
    worker = WorkerBroker(redis_server.url, model, "w1")
    await worker.heartbeat()
    await gateway.jobs.submit(model, PARAMS, user="u", user_id=1, timeout_s=30, max_queue=2)
    expiring = await gateway.jobs.submit(model, PARAMS, user="v", user_id=2, timeout_s=0.3, max_queue=2)
    assert expiring.position == 1
    end = await asyncio.wait_for(expiring.next(), timeout=5)
    assert isinstance(end, Failed) and end.error.status == 504
    _rotation, _waiting_jobs, bodies, _turn, waiting = keys.fair_queue(model)
    for _ in range(50):
        if int(await probe.get(waiting) or 0) == 0:
            break
        await asyncio.sleep(0.05)
    assert int(await probe.get(waiting) or 0) == 0 and not await probe.hexists(bodies, expiring.job.id)
    # before, the expired job still counted against max_queue=2: this submit was refused with queue_full
    admitted = await gateway.jobs.submit(model, PARAMS, user="v", user_id=2, timeout_s=30, max_queue=2)
    assert admitted.position > 0
    await worker.close()


async def test_a_worker_that_exits_cleanly_leaves_no_consumer(redis_server: RedisServer, probe: Redis) -> None:
    model = model_name()
    leaving, holding = (WorkerBroker(redis_server.url, model, name) for name in ("leaving", "holding"))
    await leaving.ensure_group()
    await probe.xadd(keys.jobs(model), {"job": job(model).model_dump_json()})
    assert [claimed.job.model for claimed in await holding.claim(1)] == [model]
    assert await leaving.claim(1, block_ms=10) == []  # reading made it a consumer, with nothing pending
    await leaving.close()
    await holding.close()
    consumers = {consumer["name"] for consumer in await probe.xinfo_consumers(keys.jobs(model), keys.WORKER_GROUP)}
    assert consumers == {b"holding"}, "a consumer still holding an entry stays (its entry must remain claimable)"


def job(model: str) -> Job:
    return Job(id=f"chatcmpl-{uuid.uuid4().hex}", model=model, params=PARAMS, reply_to=keys.inbox("nobody"),
               deadline_ms=2**50)


async def test_reclaim_reaches_a_dead_workers_job_behind_many_running_ones(
        redis_server: RedisServer, probe: Redis) -> None:
    """XAUTOCLAIM looks at ten entries per job it may take; restarting from the start of the pending list
    each time, a worker with one free slot never got past the first ten running jobs."""
    model = model_name()
    busy = WorkerBroker(redis_server.url, model, "busy", lease_ms=500)
    dead = WorkerBroker(redis_server.url, model, "dead", lease_ms=500)
    rescuer = WorkerBroker(redis_server.url, model, "rescuer", lease_ms=500)
    await busy.ensure_group()
    for _ in range(25):
        await probe.xadd(keys.jobs(model), {"job": job(model).model_dump_json()})
    running = await busy.claim(25)
    lost = job(model)
    await probe.xadd(keys.jobs(model), {"job": lost.model_dump_json()})
    assert [claimed.job.id for claimed in await dead.claim(1)] == [lost.id]
    await asyncio.sleep(0.6)
    rescued: list[str] = []
    for _ in range(4):
        await busy.renew([claimed.entry_id for claimed in running])
        rescued += [claimed.job.id for claimed in await rescuer.reclaim(1)]
    assert rescued == [lost.id]
    for broker in (busy, dead, rescuer):
        await broker.close()


def test_a_lease_shorter_than_two_heartbeats_is_refused_at_start() -> None:
    with pytest.raises(ValidationError) as refused:
        WorkerSettings(heartbeat_s=2.0, lease_ms=3000)
    assert "MODELPORT_LEASE_MS" in str(refused.value) and "MODELPORT_HEARTBEAT_S" in str(refused.value)
    assert WorkerSettings(heartbeat_s=1.0, lease_ms=3000).lease_ms == 3000


async def test_the_gateway_follows_one_run_and_drops_repeated_events(
        gateway: GatewayBroker, redis_server: RedisServer, probe: Redis) -> None:
    """A batch re-sent after a Redis timeout (executed the first time after all) and a stalled run that woke
    up beside its re-run both reach the inbox; the client sees each word once, from one run."""
    model = model_name()
    worker = WorkerBroker(redis_server.url, model, "w1")
    await worker.heartbeat()
    handle = await gateway.jobs.submit(model, PARAMS, user="u", user_id=1, timeout_s=10, max_queue=10)
    word = encode_event(Delta(choices=[ChoiceDelta(content="once ")]))
    for attempt, sequence, event in ((2, 1, word), (2, 1, word), (1, 1, encode_event(Delta(choices=[
            ChoiceDelta(content="stale ")]))), (2, 2, encode_event(Delta(choices=[ChoiceDelta(content="and done")]))),
            (2, 3, encode_event(Done()))):
        await probe.xadd(gateway.inbox.key, {"v": ENVELOPE_VERSION, "j": handle.job.id, "a": attempt, "s": sequence,
                                         "e": event})
    text = ""
    while isinstance(received := await asyncio.wait_for(handle.next(), timeout=5), Delta):
        text += "".join(choice.content or "" for choice in received.choices)
    assert text == "once and done" and isinstance(received, Done)
    await worker.close()


async def test_a_batch_of_events_is_fenced_and_de_duplicated_event_by_event(
        gateway: GatewayBroker, redis_server: RedisServer, probe: Redis) -> None:
    """A worker sends one entry per gateway and flush, holding the events of several jobs: each record is
    fenced and de-duplicated as a single event would be, an unreadable record fails its own job only, and
    an entry that is no batch at all is dropped without stopping the reader."""
    model = model_name()
    worker = WorkerBroker(redis_server.url, model, "w1")
    await worker.heartbeat()
    first, second, broken = [await gateway.jobs.submit(model, PARAMS, user="u", user_id=1, timeout_s=10,
                                                       max_queue=10) for _ in range(3)]
    assert first.job.batches, "this gateway reads batches"

    def word(text: str) -> Delta:
        return Delta(choices=[ChoiceDelta(content=text)])

    await probe.xadd(gateway.inbox.key, {"v": ENVELOPE_VERSION, "b": b"not json"})
    await probe.xadd(gateway.inbox.key, {"v": ENVELOPE_VERSION, "b": encode_batch([
        (first.job.id, 2, 1, word("once ")), (second.job.id, 1, 1, word("other ")),
        (first.job.id, 1, 1, word("stale ")), (first.job.id, 2, 1, word("once "))])})
    await probe.xadd(gateway.inbox.key, {"v": ENVELOPE_VERSION, "b": encode_batch([
        (first.job.id, 2, 2, word("and done")), (first.job.id, 2, 3, Done()), (second.job.id, 1, 2, Done())])
        [:-1] + b',["' + broken.job.id.encode() + b'",1,1,{"t":"done","deployment":"' + b"x" * 65 + b'"}]]'})

    async def read(handle: JobHandle) -> tuple[str, Event]:
        text = ""
        while isinstance(received := await asyncio.wait_for(handle.next(), timeout=5), Delta):
            text += "".join(choice.content or "" for choice in received.choices)
        return text, received

    assert [(text, type(end)) for text, end in [await read(first), await read(second)]] == [
        ("once and done", Done), ("other ", Done)]
    _, end = await read(broken)
    assert isinstance(end, Failed) and end.error.code == "bad_event"
    await worker.close()


async def test_a_worker_sends_each_gateway_the_entries_it_reads(redis_server: RedisServer, probe: Redis) -> None:
    """A job from a gateway that reads batches gets its events in batch entries; one from a gateway of an
    earlier build (its job does not say ``batches``) gets one entry per event, as that gateway reads them."""
    model = model_name()
    broker = WorkerBroker(redis_server.url, model, "w1")
    await broker.heartbeat()
    await broker.ensure_group()
    inboxes = {batches: keys.inbox(f"test-{uuid.uuid4().hex[:8]}") for batches in (True, False)}
    for batches, inbox in inboxes.items():
        await probe.xadd(inbox, {"init": 1})
        job = Job(id=f"chatcmpl-{batches}", model=model, params=PARAMS, reply_to=inbox, deadline_ms=2**50,
                  batches=batches)
        await probe.xadd(keys.jobs(model), {"job": job.model_dump_json()})
    stop = asyncio.Event()
    running = asyncio.create_task(Worker(broker, FakeBackend(FakeConfig(reply="a b c"))).run(stop))
    for _ in range(100):
        if await probe.xlen(keys.jobs(model)) == 0:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await running
    ranges: Any = {batches: await probe.xrange(inbox) for batches, inbox in inboxes.items()}
    entries = {batches: [fields for _, fields in ranges[batches] if b"init" not in fields] for batches in ranges}
    # A flush may be sent twice (here: Redis had not yet loaded the outbox's scripts); the gateway drops repeats.
    records = {record[2]: record for fields in entries[True] for record in decode_batch(fields[b"b"])}
    assert sorted(records) == list(range(1, len(records) + 1))
    assert records[len(records)][3] == {"t": "done", "usage": {"prompt_tokens": 1, "completion_tokens": 3},
                                        "deployment": "default"}
    singles = entries[False]
    assert singles and all(b"b" not in fields and fields[b"j"] == b"chatcmpl-False" for fields in singles)
    assert decode_event(singles[-1][b"e"]).t == "done"


async def test_consumers_of_dead_workers_are_swept_once_idle_and_empty(redis_server: RedisServer, probe: Redis) -> None:
    model = model_name()
    ghost, sweeper = (WorkerBroker(redis_server.url, model, name, lease_ms=100) for name in ("ghost", "sweeper"))
    await ghost.ensure_group()
    assert await ghost.claim(1, block_ms=10) == []  # a consumer now, then it "dies" without closing
    await asyncio.sleep(1.1)  # ten leases
    assert await sweeper.reclaim(1) == []
    names = {consumer["name"] for consumer in await probe.xinfo_consumers(keys.jobs(model), keys.WORKER_GROUP)}
    assert b"ghost" not in names
    for broker in (ghost, sweeper):
        await broker.close()


async def test_fast_answers_leave_no_in_flight_entry_or_timer(gateway: GatewayBroker,
                                                               redis_server: RedisServer, probe: Redis) -> None:
    """A worker's answer can reach the gateway before ``submit`` has resumed: the job's in-flight entry was
    then never removed (1-4 % of requests) and its deadline timer stayed armed."""
    model = model_name()
    broker = WorkerBroker(redis_server.url, model, "w1")
    await broker.heartbeat()
    stop = asyncio.Event()
    serving = asyncio.create_task(Worker(broker, FakeBackend(FakeConfig(reply="quick"))).run(stop))
    handles = await asyncio.gather(*(gateway.jobs.submit(model, PARAMS, user="u", user_id=99, timeout_s=30,
                                                    max_queue=1000) for _ in range(300)))
    for handle in handles:
        while not isinstance(await asyncio.wait_for(handle.next(), timeout=20), Done | Failed):
            continue
    stop.set()
    await serving
    for _ in range(50):
        if not await probe.zcard(keys.in_flight(99)):
            break
        await asyncio.sleep(0.05)
    assert await probe.zcard(keys.in_flight(99)) == 0
    assert await probe.zcard(keys.user_jobs(model, 99)) == 0
    assert await probe.zcard(keys.group_jobs(model, 0)) == 0  # jobs that end together are released together
    assert not gateway.jobs.timers and not gateway.jobs.handles

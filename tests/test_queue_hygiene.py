"""What the queue must not leave behind, overlook or deliver twice, against a real Redis: queued jobs past
their deadline, the consumers of workers that exited, a dead worker's job far down the pending list,
re-sent and stale events, and settings that cannot work together."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from modelport.broker.gateway import GatewayBroker
from modelport.protocol import keys
from modelport.protocol.envelope import (
    ENVELOPE_VERSION,
    ChoiceDelta,
    Delta,
    Done,
    Failed,
    GenerationParams,
    Job,
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

"""The queue contract against a real Redis, in-process: admission, delivery without loss, leases and
re-runs, bounded attempts, versioning and a fixed number of gateway connections."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from modelport.broker.gateway import GatewayBroker
from modelport.broker.job_handle import JobHandle
from modelport.protocol import keys
from modelport.protocol.envelope import ENVELOPE_VERSION, ChoiceDelta, Delta, Done, Failed, GenerationParams, Job
from modelport.protocol.errors import NoWorker, RateLimited
from modelport.workers.backends.fake import FakeBackend, FakeConfig
from modelport.workers.broker import WorkerBroker
from modelport.workers.runtime import Worker
from tests.servers import RedisServer
from tests.waiting import until_async

PARAMS = GenerationParams(messages=[{"role": "user", "content": "hi"}])


def model_name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


async def collect(handle: JobHandle) -> tuple[str, Done | Failed]:
    text = ""
    while True:
        event = await asyncio.wait_for(handle.next(), timeout=20)
        if isinstance(event, Delta):
            text += "".join(choice.content or "" for choice in event.choices)
        else:
            return text, event


async def keep_alive(broker: WorkerBroker) -> None:
    """Heartbeats for a broker that has no runtime around it."""
    while True:
        await broker.heartbeat()
        await asyncio.sleep(0.1)


@pytest.fixture
async def worker(redis_server: RedisServer) -> AsyncIterator[WorkerBroker]:
    """A worker broker that has announced itself for a model of its own."""
    broker = WorkerBroker(redis_server.url, model_name(), "w1")
    await broker.heartbeat()
    yield broker
    await broker.close()



async def test_no_live_worker_is_a_fast_503(gateway: GatewayBroker) -> None:
    with pytest.raises(NoWorker):
        await gateway.jobs.submit(model_name(), PARAMS, user="u", user_id=1, timeout_s=5, max_queue=10)


async def test_full_queue_is_a_429(gateway: GatewayBroker, worker: WorkerBroker) -> None:
    model = worker.model
    for _ in range(3):
        await gateway.jobs.submit(model, PARAMS, user="u", user_id=1, timeout_s=5, max_queue=3)
    with pytest.raises(RateLimited) as rejected:
        await gateway.jobs.submit(model, PARAMS, user="u", user_id=1, timeout_s=5, max_queue=3)
    assert rejected.value.retry_after == 1


async def test_a_burst_of_submissions_gets_one_answer_each(gateway: GatewayBroker, worker: WorkerBroker) -> None:
    """Jobs submitted in one turn of the event loop go to Redis in one round trip; each request still gets
    its own outcome: the first three fill the queue, the other two are refused."""
    model = worker.model
    outcomes = await asyncio.gather(*(gateway.jobs.submit(model, PARAMS, user="u", user_id=13, timeout_s=5,
                                                          max_queue=3) for _ in range(5)), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [JobHandle] * 3 + [RateLimited] * 2
    assert (await gateway.jobs.queue_stats([model]))[model][0] == 3


async def test_waiting_jobs_know_their_place_in_the_fair_order(gateway: GatewayBroker, worker: WorkerBroker) -> None:
    model = worker.model
    a = [await gateway.jobs.submit(model, PARAMS, user="a", user_id=11, timeout_s=5, max_queue=100) for _ in range(4)]
    b = await gateway.jobs.submit(model, PARAMS, user="b", user_id=12, timeout_s=5, max_queue=100)
    # a[0] went straight to the stream; the rest wait. Round-robin: a[1], then b, then a[2], a[3].
    assert [handle.position for handle in a] == [0, 1, 2, 3] and b.position == 2

    async def places() -> list[int]:
        return [await gateway.jobs.position(handle) for handle in (*a, b)]

    assert await places() == [0, 1, 3, 4, 2]
    # The depth autoscalers read counts the jobs waiting in the fair queue too, not only the stream's.
    assert (await gateway.jobs.queue_stats([model]))[model][0] == 5
    await worker.ensure_group()
    assert [claimed.job.id for claimed in await worker.claim(1)] == [a[0].job.id]
    assert [claimed.job.id for claimed in await worker.claim(1)] == [a[1].job.id]
    # a has now been served from the queue, so b (who has waited all along) goes next, then a's in turn.
    assert await places() == [0, 0, 2, 3, 1]
    assert [claimed.job.id for claimed in await worker.claim(1)] == [b.job.id]
    assert await places() == [0, 0, 1, 2, 0]
    assert (await gateway.jobs.queue_stats([model]))[model][0] == 5  # three running, two waiting


async def test_jobs_go_straight_to_the_stream_while_live_workers_have_free_slots(
        gateway: GatewayBroker, worker: WorkerBroker, redis_server: RedisServer) -> None:
    """The fair queue is for jobs that must wait: while the live workers have said they have free slots,
    jobs go straight to the stream (skipping the fair queue's bookkeeping and the worker's move); a worker
    that takes none says so, and a worker whose heartbeat lapsed no longer counts."""
    model = worker.model
    await worker.ensure_group()
    lapsing = WorkerBroker(redis_server.url, model, "w2", lease_ms=200)
    await lapsing.heartbeat()
    assert await lapsing.claim(50, block_ms=10) == []  # it says it has 50 free slots, then stops beating

    async def submit(user_id: int) -> JobHandle:
        return await gateway.jobs.submit(model, PARAMS, user="u", user_id=user_id, timeout_s=5, max_queue=100)

    assert await worker.claim(4, block_ms=10) == []  # four free slots
    await asyncio.sleep(0.3)
    first = [await submit(21) for _ in range(4)]
    assert [handle.position for handle in first] == [0, 0, 0, 0]
    assert (await submit(21)).position == 1  # the lapsed worker's 50 slots are not counted
    assert len(await worker.claim(4, block_ms=10)) == 4
    assert len(await worker.claim(1, block_ms=10)) == 1  # the waiting job moves over when asked for
    await worker.claiming_none()  # full now
    # As when workers say nothing (an earlier build), one job may wait in the stream, the next waits fairly.
    assert [(await submit(22)).position for _ in range(2)] == [0, 1]
    await lapsing.close()


async def test_submit_loads_its_script_again_after_redis_forgot_it(
        gateway: GatewayBroker, worker: WorkerBroker, redis_server: RedisServer, probe: Redis) -> None:
    model = worker.model
    await probe.script_flush()
    handle = await gateway.jobs.submit(model, PARAMS, user="u", user_id=7, timeout_s=5, max_queue=10)
    assert handle.position == 0 and await probe.xlen(keys.jobs(model)) == 1
    assert await probe.zscore(keys.in_flight(7), handle.job.id) is not None


async def test_a_claim_loads_its_script_again_after_redis_forgot_it(
        gateway: GatewayBroker, worker: WorkerBroker, probe: Redis) -> None:
    """The fair queue's move and the read go in one round trip: when Redis forgot the move's script, what the
    read took is still handed over, and the next claim moves the waiting job."""
    model = worker.model
    await worker.ensure_group()
    handles = [await gateway.jobs.submit(model, PARAMS, user="u", user_id=8, timeout_s=5, max_queue=10)
               for _ in range(2)]
    assert [handle.position for handle in handles] == [0, 1]
    await probe.script_flush()
    assert [claimed.job.id for claimed in await worker.claim(2, block_ms=10)] == [handles[0].job.id]
    assert [claimed.job.id for claimed in await worker.claim(2, block_ms=10)] == [handles[1].job.id]


async def test_worker_serves_the_queue_without_losing_or_reordering_deltas(
        gateway: GatewayBroker, redis_server: RedisServer, probe: Redis) -> None:
    model = model_name()
    backend = FakeBackend(FakeConfig(reply=" ".join(f"w{i}" for i in range(400))))
    broker = WorkerBroker(redis_server.url, model, "w1")
    await broker.heartbeat()
    stop = asyncio.Event()
    running = asyncio.create_task(Worker(broker, backend).run(stop))
    handles = [await gateway.jobs.submit(model, PARAMS, user="u", user_id=1, timeout_s=20, max_queue=100)
               for _ in range(30)]
    results = await asyncio.gather(*(collect(handle) for handle in handles))
    stop.set()
    await running
    expected = " ".join(f"w{i}" for i in range(400))
    assert all(text == expected and isinstance(end, Done) for text, end in results)
    assert await probe.xlen(keys.jobs(model)) == 0


async def test_jobs_cancelled_while_queued_never_start_when_claimed_together(
        gateway: GatewayBroker, redis_server: RedisServer) -> None:
    """Whether each job of one claim was cancelled while queued is asked in one round trip: the answer for
    each is its own (the cancelled ones end before any text, the others run)."""
    model = model_name()
    broker = WorkerBroker(redis_server.url, model, "w1")
    await broker.heartbeat()
    handles = [await gateway.jobs.submit(model, PARAMS, user="u", user_id=31, timeout_s=20, max_queue=100)
               for _ in range(6)]
    for handle in handles[1::2]:
        await gateway.jobs.cancel(handle)
    stop = asyncio.Event()
    running = asyncio.create_task(Worker(broker, FakeBackend(FakeConfig(reply="one two"))).run(stop))
    results = await asyncio.gather(*(collect(handle) for handle in handles))
    stop.set()
    await running
    for position, (text, end) in enumerate(results):
        if position % 2:
            assert text == "" and isinstance(end, Failed) and end.error.type == "cancelled"
        else:
            assert text == "one two" and isinstance(end, Done)


async def test_a_replaced_backend_finishes_its_running_jobs_before_it_closes(
        gateway: GatewayBroker, worker: WorkerBroker) -> None:
    closed: list[bool] = []

    class Old(FakeBackend):
        async def close(self) -> None:
            closed.append(True)

    runtime = Worker(worker, Old(FakeConfig(reply="old words here", delay_ms=100)))
    stop = asyncio.Event()
    running = asyncio.create_task(runtime.run(stop))
    before = await gateway.jobs.submit(worker.model, PARAMS, user="u", user_id=1, timeout_s=20, max_queue=10)
    first = await asyncio.wait_for(before.next(), timeout=10)
    await runtime.replace_backend(FakeBackend(FakeConfig(reply="new")))
    assert not closed, "the old backend closed while a job was still running on it"
    after = await gateway.jobs.submit(worker.model, PARAMS, user="u", user_id=1, timeout_s=20, max_queue=10)
    rest, _ = await collect(before)
    assert isinstance(first, Delta) and f"{first.choices[0].content}{rest}" == "old words here"
    assert (await collect(after))[0] == "new"
    async def old_closed() -> bool:
        return closed == [True]

    await until_async(old_closed, "the old backend closed once its job ended")
    stop.set()
    await running


async def reclaimed_to_its_end(broker: WorkerBroker, probe: Redis) -> bool:
    """One reclaim by ``broker``, which must not re-run the model's job; True once the job has left the queue."""
    assert await broker.reclaim(10) == []
    return await probe.xlen(keys.jobs(broker.model)) == 0


async def test_unstarted_job_of_a_silent_worker_is_rerun_with_bounded_attempts(
        gateway: GatewayBroker, redis_server: RedisServer, probe: Redis) -> None:
    model = model_name()
    brokers = [WorkerBroker(redis_server.url, model, f"w{i}", lease_ms=500, max_attempts=2) for i in range(3)]
    await brokers[0].ensure_group()
    beating = asyncio.create_task(keep_alive(brokers[2]))
    await brokers[2].heartbeat()
    handle = await gateway.jobs.submit(model, PARAMS, user="u", user_id=1, timeout_s=20, max_queue=10)
    [claimed] = await brokers[0].claim(1)
    [rerun] = await until_async(lambda: brokers[1].reclaim(10), "the first claim's lease expired")
    assert (rerun.job.id, rerun.attempt) == (claimed.job.id, 2)
    outbox = asyncio.create_task(brokers[2].outbox.run())
    await until_async(lambda: reclaimed_to_its_end(brokers[2], probe), "the job ends with its attempts used up")
    _, end = await collect(handle)
    assert isinstance(end, Failed) and end.error.code == "worker_lost"
    outbox.cancel()
    beating.cancel()
    for broker in brokers:
        await broker.close()


async def test_started_job_of_a_dead_worker_ends_with_an_error(
        gateway: GatewayBroker, redis_server: RedisServer, probe: Redis) -> None:
    model = model_name()
    dead, alive = (WorkerBroker(redis_server.url, model, name, lease_ms=500) for name in ("dead", "alive"))
    await dead.ensure_group()
    beating = asyncio.create_task(keep_alive(alive))
    await alive.heartbeat()
    handle = await gateway.jobs.submit(model, PARAMS, user="u", user_id=1, timeout_s=20, max_queue=10)
    [claimed] = await dead.claim(1)
    publishing = asyncio.create_task(dead.outbox.run())
    dead.outbox.put(claimed, Delta(choices=[ChoiceDelta(content="partial")]))
    await dead.outbox.drained()
    publishing.cancel()
    publishing = asyncio.create_task(alive.outbox.run())
    await until_async(lambda: reclaimed_to_its_end(alive, probe), "the dead worker's started job ends")
    text, end = await collect(handle)
    assert text == "partial"
    assert isinstance(end, Failed) and end.error.code == "worker_lost"
    publishing.cancel()
    beating.cancel()
    await dead.close()
    await alive.close()


async def test_events_of_another_envelope_version_are_refused(
        gateway: GatewayBroker, worker: WorkerBroker, redis_server: RedisServer, probe: Redis) -> None:
    model = worker.model
    handle = await gateway.jobs.submit(model, PARAMS, user="u", user_id=1, timeout_s=5, max_queue=10)
    await probe.xadd(gateway.inbox.key, {"v": 99, "j": handle.job.id, "e": b"{}"})
    _, end = await collect(handle)
    assert isinstance(end, Failed) and end.error.code == "version_mismatch"


async def test_an_unreadable_event_fails_its_job_alone(gateway: GatewayBroker, worker: WorkerBroker,
                                                       probe: Redis) -> None:
    model = worker.model
    broken = await gateway.jobs.submit(model, PARAMS, user="u", user_id=1, timeout_s=5, max_queue=10)
    await probe.xadd(gateway.inbox.key, {"v": ENVELOPE_VERSION, "j": broken.job.id, "a": 1, "s": 1,
                                         "e": b'{"t": "done", "deployment": "' + b"x" * 65 + b'"}'})
    _, end = await collect(broken)
    assert isinstance(end, Failed) and end.error.code == "bad_event" and end.error.status == 502
    fine = await gateway.jobs.submit(model, PARAMS, user="u", user_id=1, timeout_s=5, max_queue=10)
    await probe.xadd(gateway.inbox.key, {"v": ENVELOPE_VERSION, "j": fine.job.id, "a": 1, "s": 1,
                                         "e": b'{"t": "done", "deployment": "b"}'})
    _, end = await collect(fine)
    assert isinstance(end, Done), "the inbox reader lives on"


async def test_worker_refuses_jobs_of_another_envelope_version(
        gateway: GatewayBroker, worker: WorkerBroker, redis_server: RedisServer, probe: Redis) -> None:
    model = worker.model
    await worker.ensure_group()
    future = Job(v=99, id="chatcmpl-future", model=model, params=PARAMS, reply_to=gateway.inbox.key, deadline_ms=2**50)
    handle = JobHandle(future, lambda _: None)
    gateway.jobs.handles[future.id] = handle
    await probe.xadd(keys.jobs(model), {"job": future.model_dump_json()})
    stop = asyncio.Event()
    running = asyncio.create_task(Worker(worker, FakeBackend(FakeConfig())).run(stop))
    _, end = await collect(handle)
    stop.set()
    await running
    assert isinstance(end, Failed) and end.error.code == "version_mismatch"


async def test_a_gateway_uses_four_redis_connections_however_many_jobs(
        gateway: GatewayBroker, worker: WorkerBroker, redis_server: RedisServer, probe: Redis) -> None:
    model = worker.model
    listening = gateway.announcements.changes()
    await anext(listening)
    handles = await asyncio.gather(*(gateway.jobs.submit(model, PARAMS, user="u", user_id=1, timeout_s=5,
                                                         max_queue=1000) for _ in range(500)))
    mine = [client for client in await probe.client_list() if gateway.gateway_id in client["name"]]
    assert len(handles) == 500 and 1 <= len(mine) <= 4
    await listening.aclose()

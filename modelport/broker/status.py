"""What is live right now, read from Redis for status views: each model's workers (host, pid, deployment,
heartbeat age, jobs running), its queue (waiting jobs and the oldest one's wait) and the gateways' heartbeats."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from modelport.protocol import keys
from modelport.protocol.connection import RedisAddress, redis_client
from modelport.protocol.registrations import deployment_of


@dataclass
class WorkerStatus:
    id: str
    host: str
    pid: int
    deployment: str
    heartbeat_age_s: float
    running: int


@dataclass
class ModelStatus:
    name: str
    workers: list[WorkerStatus] = field(default_factory=list)
    queue_depth: int = 0  # jobs waiting for a worker (in the fair queue or not yet claimed)
    running: int = 0  # jobs claimed by a worker and not yet finished
    oldest_wait_s: float = 0.0


PER_MODEL = 6  # replies per model in live_status's first pipeline


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _host_and_pid(worker: str) -> tuple[str, int]:
    """``host-pid-random[@deployment]`` (a gateway's name has the same head)."""
    host, _, rest = worker.partition("@")[0].rpartition("-")[0].rpartition("-")
    return host, int(rest) if rest.isdigit() else 0


def _worker_group(groups: Any) -> dict[str, Any] | None:
    """The workers' consumer group of a stream, from XINFO GROUPS (an error: no stream yet)."""
    if isinstance(groups, ResponseError):
        return None
    return next((group for group in groups if _text(group["name"]) == keys.WORKER_GROUP), None)


def _model_status(model: str, replies: list[Any], group: dict[str, Any] | None, first: Any,
                  now_ms: float) -> ModelStatus:
    """One model's status from its replies (see ``live_status``) and its oldest unclaimed stream entry."""
    live, beats, pending, _groups, waiting, oldest_waiting = replies
    # XPENDING fails when nothing was ever queued (no stream or group yet): nothing runs
    running = {} if isinstance(pending, ResponseError) else {
        _text(consumer["name"]): int(consumer["pending"]) for consumer in pending.get("consumers") or []}
    status = ModelStatus(name=model, running=sum(running.values()))
    for member in sorted(_text(worker) for worker in live):
        host, pid = _host_and_pid(member)
        beat = beats.get(member.encode()) or beats.get(member)
        status.workers.append(WorkerStatus(
            id=member, host=host, pid=pid, deployment=deployment_of(member), running=running.get(member, 0),
            heartbeat_age_s=round(max(0.0, now_ms - float(beat)) / 1000, 3) if beat is not None else -1.0))
    lag = group.get("lag") if group is not None else None
    undelivered = int(lag) if lag is not None else len(first)
    status.queue_depth = undelivered + max(0, int(waiting or 0))
    oldest_in_stream = float(_text(first[0][0]).split("-")[0]) if first else None
    starts = [start for start in (oldest_in_stream, oldest_waiting[0][1] if oldest_waiting else None) if start]
    status.oldest_wait_s = round(max(0.0, now_ms - min(starts)) / 1000, 3) if starts else 0.0
    return status


async def live_status(redis: Redis, models: list[str]) -> dict[str, Any]:
    """``{"models": [...], "gateways": [...]}`` as of Redis's clock, in two pipelined round trips whatever the
    number of models; ``requests_last_minute`` and ``errors_last_minute`` are the caller's to add (they come
    from usage rows)."""
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros / 1000
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrangebyscore(keys.GATEWAYS, now_ms - 60_000, "+inf", withscores=True)
        for model in models:
            pipe.zrangebyscore(keys.workers(model), now_ms, "+inf")
            pipe.hgetall(keys.heartbeats(model))
            pipe.xpending(keys.jobs(model), keys.WORKER_GROUP)
            pipe.xinfo_groups(keys.jobs(model))
            pipe.get(keys.fair_queue(model)[4])
            pipe.zrange(keys.waiting_since(model), 0, 0, withscores=True)
        gateways, *replies = await pipe.execute(raise_on_error=False)
    for index, reply in enumerate([gateways, *replies]):
        # XPENDING and XINFO (the 3rd and 4th of a model's) fail while its stream does not exist yet
        if isinstance(reply, Exception) and (index == 0 or (index - 1) % PER_MODEL not in (2, 3)):
            raise reply
    per_model = [replies[PER_MODEL * i:PER_MODEL * (i + 1)] for i in range(len(models))]
    groups = [_worker_group(values[3]) for values in per_model]
    # The oldest entry no worker has claimed: the first after the group's last delivered id.
    async with redis.pipeline(transaction=False) as pipe:
        for model, group in zip(models, groups, strict=True):
            if group is not None:
                pipe.xrange(keys.jobs(model), min=f"({_text(group['last-delivered-id'])}", count=1)
        firsts = iter(await pipe.execute())
    return {
        "models": [asdict(_model_status(model, values, group, next(firsts) if group is not None else [], now_ms))
                   for model, values, group in zip(models, per_model, groups, strict=True)],
        "gateways": [{"id": _text(name), "host": _host_and_pid(_text(name))[0], "pid": _host_and_pid(_text(name))[1],
                      "heartbeat_age_s": round(max(0.0, now_ms - seen) / 1000, 3)} for name, seen in gateways],
    }


def with_usage(status: dict[str, Any], llms: list[dict[str, Any]], recent: dict[str, tuple[int, int]]
               ) -> dict[str, Any]:
    """A live status (read for ``llms``, in their order) with each LLM's enabled flag and its last minute's
    requests and errors (from usage rows)."""
    for model, llm in zip(status["models"], llms, strict=True):
        model["enabled"] = llm["enabled"]
        model["requests_last_minute"], model["errors_last_minute"] = recent.get(model["name"], (0, 0))
    return status


class StatusReader:
    """One Redis connection for a status view that reads again and again (``modelport status --watch``)."""

    def __init__(self, redis_url: RedisAddress) -> None:
        self._redis = redis_client(redis_url, connections=1, name="mp-status")

    async def read(self, models: list[str]) -> dict[str, Any]:
        return await live_status(self._redis, models)

    async def aclose(self) -> None:
        await self._redis.aclose()

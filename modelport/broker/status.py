"""What is live right now, read from Redis for status views: each model's workers (host, pid, deployment,
heartbeat age, jobs running), its queue (waiting jobs and the oldest one's wait) and the gateways' heartbeats."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from modelport.protocol import keys
from modelport.protocol.connection import redis_client
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _host_and_pid(worker: str) -> tuple[str, int]:
    """``host-pid-random[@deployment]`` (a gateway's name has the same head)."""
    host, _, rest = worker.partition("@")[0].rpartition("-")[0].rpartition("-")
    return host, int(rest) if rest.isdigit() else 0


async def _pending_by_worker(redis: Redis, model: str) -> dict[str, int]:
    try:
        summary = await redis.xpending(keys.jobs(model), keys.WORKER_GROUP)
    except ResponseError:  # no stream or group yet: nothing was ever queued
        return {}
    return {_text(consumer["name"]): int(consumer["pending"]) for consumer in summary.get("consumers") or []}


async def _undelivered(redis: Redis, model: str) -> tuple[int, float | None]:
    """Jobs in the stream no worker has claimed, and when the oldest of them was queued (server ms)."""
    try:
        groups = await redis.xinfo_groups(keys.jobs(model))
    except ResponseError:
        return 0, None
    group = next((group for group in groups if _text(group["name"]) == keys.WORKER_GROUP), None)
    if group is None:
        return 0, None
    lag = group.get("lag")
    first: Any = await redis.xrange(keys.jobs(model), min=f"({_text(group['last-delivered-id'])}", count=1)
    count = int(lag) if lag is not None else len(first)
    return count, float(_text(first[0][0]).split("-")[0]) if first else None


async def model_status(redis: Redis, model: str, now_ms: float) -> ModelStatus:
    status = ModelStatus(name=model)
    live: Any = await redis.zrangebyscore(keys.workers(model), now_ms, "+inf")
    beats = await redis.hgetall(keys.heartbeats(model))
    running = await _pending_by_worker(redis, model)
    for member in sorted(_text(worker) for worker in live):
        host, pid = _host_and_pid(member)
        beat = beats.get(member.encode()) or beats.get(member)
        status.workers.append(WorkerStatus(
            id=member, host=host, pid=pid, deployment=deployment_of(member), running=running.get(member, 0),
            heartbeat_age_s=round(max(0.0, now_ms - float(beat)) / 1000, 3) if beat is not None else -1.0))
    status.running = sum(running.values())
    undelivered, oldest_in_stream = await _undelivered(redis, model)
    waiting = int(await redis.get(keys.fair_queue(model)[4]) or 0)
    status.queue_depth = undelivered + max(0, waiting)
    oldest_waiting: Any = await redis.zrange(keys.waiting_since(model), 0, 0, withscores=True)
    starts = [start for start in (oldest_in_stream, oldest_waiting[0][1] if oldest_waiting else None) if start]
    status.oldest_wait_s = round(max(0.0, now_ms - min(starts)) / 1000, 3) if starts else 0.0
    return status


async def live_status(redis: Redis, models: list[str]) -> dict[str, Any]:
    """``{"models": [...], "gateways": [...]}`` as of Redis's clock; ``requests_last_minute`` and
    ``errors_last_minute`` are the caller's to add (they come from usage rows)."""
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros / 1000
    gateways: Any = await redis.zrangebyscore(keys.GATEWAYS, now_ms - 60_000, "+inf", withscores=True)
    return {
        "models": [asdict(await model_status(redis, model, now_ms)) for model in models],
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

    def __init__(self, redis_url: str) -> None:
        self._redis = redis_client(redis_url, connections=1, name="mp-status")

    async def read(self, models: list[str]) -> dict[str, Any]:
        return await live_status(self._redis, models)

    async def aclose(self) -> None:
        await self._redis.aclose()

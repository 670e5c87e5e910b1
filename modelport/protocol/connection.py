"""Redis clients with bounded pools, timeouts and reconnect-with-backoff, shared by both broker sides; with
Sentinels, the client asks them for the current primary and follows it through failovers; on a Redis
Cluster, it routes each command (and each part of a pipeline) to the node holding its slot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Every way a Redis command can fail: unreachable, timed out, refused (OOM, READONLY, no permission), a
# script error, or a cluster without a node for a slot. On the request path each becomes the error family's
# 503 ``queue_unavailable``.
QUEUE_ERRORS = (RedisError, RedisClusterException, OSError)


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is: its URL (user, password, database, TLS options and, without Sentinels, its address)
    and, when a Sentinel-managed primary serves it, the Sentinels to ask for it by ``service`` name."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = "mymaster"
    cluster: bool = False  # the URL names any node of a Redis Cluster; the client discovers the rest


RedisAddress = str | RedisTarget  # a URL alone, or a RedisTarget


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The primary named by the Sentinels, through a pool that makes callers wait for a free connection
    (never more than its bound). Closing it also closes its connections to the Sentinels."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the client closes (not a failover's reconnect)
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.connection_pool.disconnect()


class _BoundedCluster(RedisCluster):
    """A cluster client whose commands and pipelines wait for one of ``bound`` places, so that it never
    holds more than ``bound`` connections to any node (as the single-node pool), instead of failing when
    they are all busy. A pipeline that re-sends a command after a slot moved (a failover) already holds
    its place: the command does not wait for another."""

    def __init__(self, *args: Any, bound: int, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "max_connections": bound})
        self.bound = _Places(bound)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.bound.taken():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        assert shard_hint is None, "no shard hints on a cluster"
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]  # as RedisCluster.pipeline does


class _Places:
    """A semaphore a task already holding it enters again without taking a second place."""

    def __init__(self, places: int) -> None:
        self._semaphore = asyncio.Semaphore(places)
        self._held: ContextVar[bool] = ContextVar(f"places-{id(self)}", default=False)

    @contextlib.asynccontextmanager
    async def taken(self) -> AsyncIterator[None]:
        if self._held.get():
            yield
            return
        async with self._semaphore:
            token = self._held.set(True)
            try:
                yield
            finally:
                self._held.reset(token)


class _BoundedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = cast(_BoundedCluster, self.cluster_client)
        async with client.bound.taken():
            return await super().execute(raise_on_error, allow_redirections)


def redis_client(address: RedisAddress, *, connections: int, name: str, socket_timeout: float = 5.0) -> Redis:
    """A client whose pool never opens more than ``connections`` sockets; callers wait for a free one.
    ``name`` is shown by CLIENT LIST, so an operator can tell whose connections are whose."""
    target = RedisTarget(address) if isinstance(address, str) else address
    options: dict[str, Any] = dict(
        client_name=name,
        max_connections=connections,
        timeout=socket_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=2.0,
        health_check_interval=0,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    if target.cluster:
        # Each node gets at most ``connections``; the cluster client retries (with the same backoff) after
        # refreshing its map of the slots when a node fails or a slot moves.
        for pool_only in ("max_connections", "timeout", "health_check_interval"):
            del options[pool_only]
        cluster = _BoundedCluster.from_url(target.url, bound=connections, **options)
        return cast(Redis, cluster)  # the same commands, scripts and pipelines, routed by slot
    if not target.sentinels:
        return Redis.from_pool(BlockingConnectionPool.from_url(target.url, **options))
    # The URL gives the credentials, database and TLS options; the Sentinels give the address.
    settings: dict[str, Any] = dict(parse_url(target.url))
    for field in ("host", "port"):
        settings.pop(field, None)
    tls = settings.pop("connection_class", None) is SSLConnection
    sentinels = Sentinel(list(target.sentinels), socket_timeout=socket_timeout, socket_connect_timeout=2.0)
    pool = _BlockingSentinelPool(target.service, sentinels, ssl=tls, **settings, **options)  # type: ignore[no-untyped-call]
    return Redis.from_pool(pool)  # the client owns its pool: closing the client closes every connection

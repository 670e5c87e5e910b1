"""Redis clients with bounded pools, timeouts and reconnect-with-backoff, shared by both broker sides; with
Sentinels, the client asks them for the current primary and follows it through failovers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Every way a Redis command can fail: unreachable, timed out, refused (OOM, READONLY, no permission) or a
# script error. On the request path each becomes the error family's 503 ``queue_unavailable``.
QUEUE_ERRORS = (RedisError, OSError)


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is: its URL (user, password, database, TLS options and, without Sentinels, its address)
    and, when a Sentinel-managed primary serves it, the Sentinels to ask for it by ``service`` name."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = "mymaster"


RedisAddress = str | RedisTarget  # a URL alone, or a RedisTarget


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The primary named by the Sentinels, through a pool that makes callers wait for a free connection
    (never more than its bound). Closing it also closes its connections to the Sentinels."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the client closes (not a failover's reconnect)
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.connection_pool.disconnect()


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

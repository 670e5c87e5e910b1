"""Redis clients with bounded pools, timeouts and reconnect-with-backoff, shared by both broker sides."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Every way a Redis command can fail: unreachable, timed out, refused (OOM, READONLY, no permission) or a
# script error. On the request path each becomes the error family's 503 ``queue_unavailable``.
QUEUE_ERRORS = (RedisError, OSError)


def redis_client(url: str, *, connections: int, name: str, socket_timeout: float = 5.0) -> Redis:
    """A client whose pool never opens more than ``connections`` sockets; callers wait for a free one.
    ``name`` is shown by CLIENT LIST, so an operator can tell whose connections are whose."""
    pool = BlockingConnectionPool.from_url(
        url,
        client_name=name,
        max_connections=connections,
        timeout=socket_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=2.0,
        health_check_interval=0,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return Redis.from_pool(pool)  # the client owns its pool: closing the client closes every connection

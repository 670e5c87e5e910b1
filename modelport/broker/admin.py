"""The admin app's Redis: announcing directory changes and counting login attempts."""

from __future__ import annotations

from modelport.broker.announcements import announce
from modelport.protocol import keys
from modelport.protocol.connection import redis_client
from modelport.protocol.registrations import Registration


class AdminBroker:
    def __init__(self, redis_url: str) -> None:
        self._redis = redis_client(redis_url, connections=2, name="mp-admin")

    async def close(self) -> None:
        await self._redis.aclose()

    async def announce(self, registrations: list[Registration]) -> None:
        await announce(self._redis, registrations)

    async def count_attempt(self, subjects: list[tuple[str, int]], window_s: int) -> bool:
        """Count one attempt against each ``(subject, allowed)`` atomically per subject, counting from the
        first attempt of a window of ``window_s``; True while every subject is within what it is allowed."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for subject, _allowed in subjects:
                pipe.incr(keys.login_failures(subject))
                pipe.expire(keys.login_failures(subject), window_s, nx=True)
            replies = await pipe.execute()
        return all(int(count) <= allowed for count, (_subject, allowed) in zip(replies[::2], subjects, strict=True))

    async def forgive_attempt(self, subjects: list[str]) -> None:
        """Take back one counted attempt of each subject (it succeeded)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for subject in subjects:
                pipe.decr(keys.login_failures(subject))
            await pipe.execute()

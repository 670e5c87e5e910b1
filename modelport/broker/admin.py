"""The admin app's Redis: announcing directory changes, counting login attempts, reading live status and
testing a model with one job."""

from __future__ import annotations

import asyncio
from typing import Any

from modelport.broker.announcements import announce
from modelport.broker.gateway import GatewayBroker
from modelport.broker.status import live_status
from modelport.protocol import keys
from modelport.protocol.connection import RedisAddress, redis_client
from modelport.protocol.envelope import Delta, Failed, GenerationParams
from modelport.protocol.errors import ErrorBody, ModelPortError
from modelport.protocol.registrations import Registration
from modelport.protocol.vectors import unpack


class AdminBroker:
    def __init__(self, redis_url: RedisAddress) -> None:
        self._redis_url = redis_url
        self._redis = redis_client(redis_url, connections=2, name="mp-admin")
        self._tester: GatewayBroker | None = None  # started by the first model test
        self._tester_lock = asyncio.Lock()

    async def close(self) -> None:
        if self._tester is not None:
            await self._tester.close()
        await self._redis.aclose()

    async def live_status(self, models: list[str]) -> dict[str, Any]:
        """Workers, queues and gateways as ``modelport status`` shows them."""
        return await live_status(self._redis, models)

    async def try_model(self, model: str, params: GenerationParams, *, user: str, user_id: int, max_queue: int,
                        timeout_s: float) -> tuple[str, ErrorBody | None]:
        """One job through the model's real queue and workers (grants and limits aside: an administrator tests
        a model before granting it); its answer, and the error it ended with, if any."""
        async with self._tester_lock:
            if self._tester is None:
                self._tester = GatewayBroker(self._redis_url, listed=False)
                await self._tester.start()
        try:
            handle = await self._tester.jobs.submit(model, params, user=user, user_id=user_id, timeout_s=timeout_s,
                                                    max_queue=max_queue)
        except ModelPortError as refused:
            return "", refused.body()
        answer: list[str] = []
        while True:
            event = await handle.next()
            if isinstance(event, Delta):
                answer.extend(choice.content or "" for choice in event.choices)
            elif isinstance(event, Failed):
                return "".join(answer), event.error
            else:  # an embedding model's answer is its vectors' length
                vectors = [unpack(packed) for packed in event.embeddings or []]
                return "".join(answer) or " ".join(f"a vector of {len(vector)} values" for vector in vectors), None

    async def spend_of(self, subjects: list[str]) -> list[dict[str, str]]:
        """Each limited subject's spend hash (``day``, ``month``, ``total`` as "period:micro-units")."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for subject in subjects:
                pipe.hgetall(keys.limit_keys(subject)[4])
            replies = await pipe.execute()
        return [{key.decode(): value.decode() for key, value in reply.items()} for reply in replies]

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

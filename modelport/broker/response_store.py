"""Stored Responses API responses in Redis, one key each, expiring after the installation's time; each is
its owner's alone (another user's id reads as absent)."""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as redis

from modelport.protocol import keys


class ResponseStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    async def save(self, response_id: str, user_id: int, record: dict[str, Any], ttl_s: int) -> None:
        await self._redis.set(keys.stored_response(response_id), orjson.dumps({**record, "user_id": user_id}),
                              ex=ttl_s)

    async def load(self, response_id: str, user_id: int) -> dict[str, Any] | None:
        raw = await self._redis.get(keys.stored_response(response_id))
        record: dict[str, Any] | None = orjson.loads(raw) if raw is not None else None
        return record if record is not None and record.get("user_id") == user_id else None

    async def delete(self, response_id: str, user_id: int) -> bool:
        if await self.load(response_id, user_id) is None:
            return False
        return bool(await self._redis.delete(keys.stored_response(response_id)))

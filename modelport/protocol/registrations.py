"""The LLM registrations workers start from, mirrored from the database into one Redis hash by whoever
changes them, so a worker host needs only Redis and its model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis

from modelport.protocol import keys


class Registration(BaseModel):
    name: str
    backend: str
    config: dict[str, Any]
    enabled: bool = True


class NotRegistered(LookupError):
    """The mirror is there and does not list the LLM: a worker for it has nothing to serve."""


async def mirror(redis: Redis, registrations: list[Registration]) -> None:
    """Make Redis hold exactly these registrations (replaced in one transaction)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.REGISTRATIONS)
        if registrations:
            pipe.hset(keys.REGISTRATIONS, mapping={r.name: r.model_dump_json() for r in registrations})
        await pipe.execute()


async def lookup(redis: Redis, name: str) -> Registration | None:
    """The LLM's registration; None while there is no mirror at all (nothing registered yet, or Redis
    lost it and no gateway has restored it); NotRegistered when the mirror does not list it."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.REGISTRATIONS)
        pipe.hget(keys.REGISTRATIONS, name)
        exists, raw = await pipe.execute()
    if not exists:
        return None
    try:
        if raw is None:
            raise NotRegistered(f"no LLM named {name!r} is registered")
        return Registration.model_validate_json(raw)
    except ValidationError as exc:
        raise NotRegistered(f"the registration of {name!r} in Redis is unreadable: {exc}") from None

"""Announce a change to users, tokens, grants or models: mirror the LLM registrations for workers and
tell every gateway to drop its cached view."""

from __future__ import annotations

from redis.asyncio import Redis

from modelport.protocol import keys
from modelport.protocol.connection import redis_client
from modelport.protocol.registrations import Registration, mirror


async def announce(redis: Redis, registrations: list[Registration]) -> None:
    await mirror(redis, registrations)
    await redis.publish(keys.INVALIDATE_CHANNEL, "all")


async def announce_change(redis_url: str, registrations: list[Registration]) -> None:
    """``announce`` over a connection of its own (for one-shot callers such as the CLI)."""
    client = redis_client(redis_url, connections=1, name="mp-announcer")
    try:
        await announce(client, registrations)
    finally:
        await client.aclose()

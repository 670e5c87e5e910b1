"""Announce a change to users, tokens, grants or models, so every gateway drops its cached view."""

from __future__ import annotations

from modelport.protocol import keys
from modelport.protocol.connection import redis_client


async def announce_change(redis_url: str) -> None:
    client = redis_client(redis_url, connections=1, name="mp-announcer")
    try:
        await client.publish(keys.INVALIDATE_CHANNEL, "all")
    finally:
        await client.aclose()

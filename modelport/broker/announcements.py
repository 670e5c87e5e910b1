"""Change announcements: whoever changes users, tokens, grants or models mirrors the LLM registrations for
workers and tells every gateway to drop its cached view; a gateway follows those announcements and the
cancellation channel on one subscriber connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable

from redis.asyncio import Redis

from modelport.protocol import keys
from modelport.protocol.connection import QUEUE_ERRORS, RedisAddress, redis_client
from modelport.protocol.registrations import Registration

log = logging.getLogger(__name__)

LISTEN_TIMEOUT_S = 1.0


async def mirror(redis: Redis, registrations: list[Registration]) -> None:
    """Make Redis hold exactly these registrations (replaced in one transaction)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.REGISTRATIONS)
        if registrations:
            pipe.hset(keys.REGISTRATIONS, mapping={r.name: r.model_dump_json() for r in registrations})
        await pipe.execute()


async def announce(redis: Redis, registrations: list[Registration]) -> None:
    await mirror(redis, registrations)
    await invalidate(redis)


async def invalidate(redis: Redis) -> None:
    """Tell every gateway to drop its cached view (a change that leaves the registrations as they are)."""
    await redis.publish(keys.INVALIDATE_CHANNEL, "all")


async def announce_change(redis_url: RedisAddress, registrations: list[Registration]) -> None:
    """``announce`` over a connection of its own (for one-shot callers such as the CLI)."""
    client = redis_client(redis_url, connections=1, name="mp-announcer")
    try:
        await announce(client, registrations)
    finally:
        await client.aclose()


class Announcements:
    """A gateway's subscription to the announcement and cancellation channels."""

    def __init__(self, subscriber: Redis, on_cancel: Callable[[str], None]) -> None:
        self._subscriber = subscriber
        self._on_cancel = on_cancel
        self._changes: asyncio.Queue[bool] = asyncio.Queue()
        self.closing = False

    async def changes(self) -> AsyncGenerator[bool]:
        """Yields whenever cached authorisation may be stale: False on each announced change, True after
        each (re)subscription, when Redis may also have lost state (a restart) that the gateway must restore."""
        while True:
            yield await self._changes.get()

    async def listen(self) -> None:
        """Follow both channels until ``closing`` is set (seen within ``LISTEN_TIMEOUT_S``)."""
        while not self.closing:
            try:
                async with self._subscriber.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(keys.INVALIDATE_CHANNEL, keys.CANCEL_CHANNEL)
                    self._changes.put_nowait(True)
                    while not self.closing:
                        message = await pubsub.get_message(timeout=LISTEN_TIMEOUT_S)
                        if message is None:
                            continue
                        if message["channel"] == keys.CANCEL_CHANNEL.encode():
                            self._on_cancel(message["data"].decode())
                        else:
                            self._changes.put_nowait(False)
            except QUEUE_ERRORS:
                log.warning("announcement channels lost; reconnecting")
                await asyncio.sleep(0.5)

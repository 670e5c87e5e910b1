"""A gateway's Redis connections and the parts that share them: its job queue, its inbox, its
subscription to announcements, and the rate limiter.

A process holds four Redis connections however many streams are open: one blocking inbox reader,
one pub/sub subscriber and a pool of two for commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

from modelport.broker.announcements import Announcements, invalidate, mirror
from modelport.broker.inbox import READ_BLOCK_MS, Inbox
from modelport.broker.jobs import JobQueue
from modelport.broker.limits import BudgetAlert, LimitSubject, RateLimiter
from modelport.broker.response_store import ResponseStore
from modelport.protocol import keys, scripts
from modelport.protocol.connection import QUEUE_ERRORS, RedisAddress, redis_client
from modelport.protocol.registrations import Registration
from modelport.protocol.spend import Periods

WATCH_INTERVAL_S = 1.0


class GatewayBroker:
    def __init__(self, redis_url: RedisAddress, lease_s: float = 15.0, *, listed: bool = True, currency: str = "USD",
                 on_alert: Callable[[BudgetAlert], None] | None = None,
                 spent: Callable[[LimitSubject, Periods], Awaitable[tuple[float, float, float]]] | None = None
                 ) -> None:
        """``listed``: status views show it among the gateways (not the admin app's, which only tests models);
        ``on_alert`` hears of budgets reaching 80 % and 100 %."""
        self.gateway_id = uuid.uuid4().hex
        self._listed = listed
        # How status views name it: host, process id and the start of its id.
        self.process_name = f"{socket.gethostname()}-{os.getpid()}-{self.gateway_id[:8]}"
        name = f"mp-gateway-{self.gateway_id}"
        self._commands = redis_client(redis_url, connections=2, name=name)
        self._reader = redis_client(redis_url, connections=1, name=f"{name}-inbox")
        self._subscriber = redis_client(redis_url, connections=1, name=f"{name}-sub", socket_timeout=30.0)
        self._lease_s = lease_s
        self.jobs = JobQueue(self._commands, keys.inbox(self.gateway_id), int(lease_s * 1000))
        self.inbox = Inbox(self._reader, self._commands, self.gateway_id, self.jobs.handles.get, self.jobs.fail_all)
        self.announcements = Announcements(self._subscriber, on_cancel=self.jobs.withdraw_if_waiting)
        self.limits = RateLimiter(self._commands, lease_ms=int(lease_s * 1000), currency=currency,
                                  on_alert=on_alert or (lambda _alert: None), spent=spent)
        self.responses = ResponseStore(self._commands)
        self._seen = self._commands.register_script(scripts.GATEWAY_SEEN)
        self._readers: list[asyncio.Task[None]] = []
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with contextlib.suppress(*QUEUE_ERRORS):
            await self.inbox.keep()
        self._readers = [asyncio.create_task(self.inbox.read()), asyncio.create_task(self.announcements.listen())]
        self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        # The readers are not cancelled mid-read (redis-py on Python 3.11 can swallow that cancellation);
        # they see the flag when their blocking read returns, within a second.
        self.inbox.closing = self.announcements.closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._readers:
            await asyncio.wait(self._readers, timeout=READ_BLOCK_MS / 1000 + 2)
            for reader in self._readers:
                reader.cancel()
        await self.jobs.close()
        with contextlib.suppress(*QUEUE_ERRORS):
            await self.inbox.delete()
            await self._commands.zrem(keys.GATEWAYS, self.process_name)
        for client in (self._commands, self._reader, self._subscriber):
            await client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._commands.ping())
        except QUEUE_ERRORS:
            return False

    async def announce_change(self) -> None:
        """Every gateway (this one too) drops its cached view: a user changed a preset of theirs."""
        await invalidate(self._commands)

    async def restore_registrations(self, registrations: list[Registration]) -> None:
        """Mirror the registrations again (after Redis restarted and lost them)."""
        await mirror(self._commands, registrations)

    async def _watch(self) -> None:
        """Keep the inbox alive and say the gateway is (for status views); every third of a lease, renew what
        this process holds for its live requests (their queue entries and concurrency slots); fail the jobs of
        models whose last worker stopped."""
        renewed_at = 0.0
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                await self.inbox.keep()
                if self._listed:
                    await self._seen(keys=[keys.GATEWAYS], args=[self.process_name])
                if time.monotonic() - renewed_at >= self._lease_s / 3:
                    renewed_at = time.monotonic()
                    await self.jobs.renew_leases()
                    await self.limits.renew()
                await self.jobs.fail_orphans()
            except QUEUE_ERRORS:
                continue

"""What the admin app's views and login share: database sessions, audit writing, change announcements
and login throttling."""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request

from modelport.admin.settings import AdminSettings
from modelport.db import queries
from modelport.db.tables import AuditEntry
from modelport.protocol import keys
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.invalidation import announce

log = logging.getLogger(__name__)


class AdminServices:
    def __init__(self, settings: AdminSettings, sessions: async_sessionmaker[AsyncSession], redis: Redis) -> None:
        self.settings = settings
        self.sessions = sessions
        self._redis = redis

    async def changed(self, request: Request, action: str, target: str) -> None:
        """Record who changed what, and tell every gateway to drop its cached authorisation."""
        actor = request.session.get("user", "?")
        async with self.sessions() as session:
            session.add(AuditEntry(actor=actor, action=action, target=target))
            await session.commit()
        await self.announce(action)

    async def announce(self, action: str) -> None:
        """Tell every gateway to drop its cached authorisation and mirror the LLM registrations for workers
        (the audit entry is already written)."""
        async with self.sessions() as session:
            registered = await queries.registrations(session)
        try:
            await announce(self._redis, registered)
        except QUEUE_ERRORS:
            log.warning("could not announce %s to the gateways; their cache TTL bounds the delay", action)

    async def login_refused(self, username: str, client: str) -> bool:
        """True when the user name used up its failed attempts in the window, or the client address four
        times as many (one address may serve several people)."""
        allowed = self.settings.admin_login_attempts
        for subject, limit in ((f"user:{username}", allowed), (f"ip:{client}", 4 * allowed)):
            count = await self._redis.get(keys.login_failures(subject))
            if count is not None and int(count) >= limit:
                return True
        return False

    async def login_failed(self, username: str, client: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for subject in (f"user:{username}", f"ip:{client}"):
                pipe.incr(keys.login_failures(subject))
                pipe.expire(keys.login_failures(subject), self.settings.admin_login_window_s)
            await pipe.execute()

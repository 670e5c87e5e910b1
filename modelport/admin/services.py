"""What the admin app's views and login share: database sessions, audit writing, change announcements
and login throttling."""

from __future__ import annotations

import hashlib
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

    async def login_attempt(self, username: str, client: str) -> bool:
        """Count a login attempt against the user name (case-folded) and the client address, atomically, and
        say whether it may go ahead: at most ``admin_login_attempts`` per name in the window, four times as
        many per address (one address may serve several people). Parallel guesses are counted each."""
        allowed = self.settings.admin_login_attempts
        subjects = ((_name_subject(username), allowed), (f"ip:{client}", 4 * allowed))
        async with self._redis.pipeline(transaction=False) as pipe:
            for subject, _limit in subjects:
                pipe.incr(keys.login_failures(subject))
                pipe.expire(keys.login_failures(subject), self.settings.admin_login_window_s, nx=True)
            replies = await pipe.execute()
        return all(int(count) <= limit for count, (_subject, limit) in zip(replies[::2], subjects, strict=True))

    async def login_succeeded(self, username: str, client: str) -> None:
        """A successful attempt is not counted against the name or the address (failures stay counted)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for subject in (_name_subject(username), f"ip:{client}"):
                pipe.decr(keys.login_failures(subject))
            await pipe.execute()


def _name_subject(username: str) -> str:
    """A bounded key part for any user name, the same for ``Alice`` and ``alice``."""
    return "user:" + hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]

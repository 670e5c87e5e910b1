"""What the admin app's views and login share: database sessions, announcing changes, live status and login
throttling."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request

from modelport.admin.settings import AdminSettings
from modelport.broker.admin import AdminBroker
from modelport.broker.status import with_usage
from modelport.db import admin_reads, directory, listing, queries, spend_reads
from modelport.db.tables import User
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.envelope import GenerationParams
from modelport.protocol.errors import ErrorBody, NotFound
from modelport.protocol.spend import MICROS, periods

log = logging.getLogger(__name__)
TEST_PROMPT = "Say hello in five words."
TEST_MAX_TOKENS = 32
TEST_TIMEOUT_S = 60.0


class AdminServices:
    def __init__(self, settings: AdminSettings, sessions: async_sessionmaker[AsyncSession],
                 broker: AdminBroker) -> None:
        self.settings = settings
        self.sessions = sessions
        self._broker = broker

    async def changed(self, request: Request, action: str, target: str) -> None:
        """A generic admin view committed a change: audit it, then announce it."""
        async with self.sessions() as session:
            await directory.record(session, request.session.get("user", "?"), action, target)
        await self.announce(action)

    async def announce(self, action: str) -> None:
        """Tell every gateway to drop its cached authorisation and mirror the LLM registrations for workers
        (the change and its audit entry are committed)."""
        async with self.sessions() as session:
            registered = await queries.registrations(session)
        try:
            await self._broker.announce(registered)
        except QUEUE_ERRORS:
            log.warning("could not announce %s to the gateways; their cache TTL bounds the delay", action)

    async def status(self) -> dict[str, Any]:
        """What ``modelport status --json`` prints: live workers, queues and gateways, last minute's usage."""
        async with self.sessions() as session:
            llms, recent = await listing.status_rows(session)
        return with_usage(await self._broker.live_status([llm["name"] for llm in llms]), llms, recent)

    async def try_model(self, user: User, model: str) -> tuple[str, ErrorBody | None]:
        """One short request to the LLM through its queue and workers, as ``user``: its answer or its error."""
        async with self.sessions() as session:
            llm = await admin_reads.llm_named(session, model)
        if llm is None:
            raise NotFound(f"No llm named '{model}'.", param="model")
        params = (GenerationParams(task="embedding", input=[TEST_PROMPT]) if llm.kind == "embedding" else
                  GenerationParams(messages=[{"role": "user", "content": TEST_PROMPT}], max_tokens=TEST_MAX_TOKENS))
        return await self._broker.try_model(model, params, user=user.name, user_id=user.id or 0,
                                            max_queue=llm.max_queue, timeout_s=TEST_TIMEOUT_S)

    async def limits(self, user: User) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The rate limits over a user's requests (their own and their groups'), and the budgets, each with what
        is spent and left in its current period."""
        async with self.sessions() as session:
            found = await spend_reads.limits_of(session, user.id or 0)
        rates = [{"scope": scope, "name": name, "requests_per_minute": limit.requests_per_minute,
                  "tokens_per_minute": limit.tokens_per_minute, "tokens_per_day": limit.tokens_per_day,
                  "concurrent_requests": limit.concurrent_requests} for scope, name, limit in found
                 if limit.requests_per_minute or limit.tokens_per_minute or limit.tokens_per_day
                 or limit.concurrent_requests]
        stored = await self._broker.spend_of([f"{limit.scope.value}:{limit.subject_id}" for _, _, limit in found])
        current = periods(datetime.now(UTC), self.settings.zone())
        budgets = []
        for (scope, name, limit), spend in zip(found, stored, strict=True):
            for period, amount, at in (("day", limit.budget_day, current.day), ("month", limit.budget_month,
                                        current.month), ("total", limit.budget_total, "")):
                if amount:
                    held, _, spent = spend.get(period, ":0").partition(":")
                    used = int(spent) / MICROS if held == at else 0.0
                    budgets.append({"scope": scope, "name": name, "period": period, "budget": amount,
                                    "spent": used, "left": max(0.0, amount - used)})
        return rates, budgets

    async def login_attempt(self, username: str, client: str) -> bool:
        """Count a login attempt against the user name (case-folded) and the client address, atomically, and
        say whether it may go ahead: at most ``admin_login_attempts`` per name in the window, four times as
        many per address (one address may serve several people). Parallel guesses are counted each."""
        allowed = self.settings.admin_login_attempts
        return await self._broker.count_attempt([(_name_subject(username), allowed), (f"ip:{client}", 4 * allowed)],
                                                self.settings.admin_login_window_s)

    async def login_succeeded(self, username: str, client: str) -> None:
        """A successful attempt is not counted against the name or the address (failures stay counted)."""
        await self._broker.forgive_attempt([_name_subject(username), f"ip:{client}"])


def _name_subject(username: str) -> str:
    """A bounded key part for any user name, the same for ``Alice`` and ``alice``."""
    return "user:" + hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]

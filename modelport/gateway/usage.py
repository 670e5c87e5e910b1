"""Usage records and token last-used times, written to the database in batches off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.broker.job_handle import JobHandle
from modelport.broker.limits import Admission
from modelport.db.queries import ModelEntry, write_usage
from modelport.db.tables import utcnow
from modelport.gateway.auth import Principal
from modelport.protocol.envelope import Done, Failed
from modelport.protocol.spend import FREE, Price

log = logging.getLogger(__name__)

MAX_BACKLOG = 100_000


@dataclass
class Outcome:
    """What happened to one request, as the response saw it."""

    principal: Principal
    job_id: str
    model: str
    stream: bool
    started_at: float
    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    ended_at: float = 0.0
    admission: Admission | None = None
    price: Price = FREE  # the answering LLM's (of the deployment that ran it, once known)
    deployment_prices: tuple[tuple[str, Price], ...] = ()
    endpoint: str = "chat"  # chat, completions, embeddings or responses

    @property
    def cost(self) -> float:
        return self.price.cost(self.prompt_tokens, self.completion_tokens)

    def charge(self, entry: ModelEntry) -> None:
        """Charge at the prices of the LLM that answers (each deployment's, once the job says which ran it)."""
        self.price, self.deployment_prices = entry.price, entry.deployment_prices

    def settle(self, event: Done | Failed, delivered_pieces: int) -> None:
        """Take the worker's count of tokens; when the job ended without one (at its deadline, or its worker
        lost), count what the client was sent, so no delivered output goes unaccounted."""
        self.price = next((price for name, price in self.deployment_prices if name == event.deployment),
                          self.price)
        if event.usage is not None:
            self.prompt_tokens = event.usage.prompt_tokens
            self.completion_tokens = event.usage.completion_tokens
        else:
            self.completion_tokens = delivered_pieces
        if isinstance(event, Failed):
            self.status = event.error.status


class UsageWriter:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], flush_s: float, settle_s: float,
                 on_record: Callable[[Outcome], None]) -> None:
        self._sessions = sessions
        self._on_record = on_record
        self._flush_s = flush_s
        self._settle_s = settle_s
        self._records: list[dict[str, Any]] = []  # usage rows, written in bulk (no ORM object per request)
        self._last_used: dict[int, datetime] = {}
        self._settling: set[asyncio.Task[None]] = set()

    def record(self, outcome: Outcome) -> None:
        if len(self._records) >= MAX_BACKLOG:
            log.error("usage backlog full; dropping the oldest record")
            self._records.pop(0)
        now = utcnow()
        self._records.append(dict(
            created_at=now, job_id=outcome.job_id, user_id=outcome.principal.user_id,
            token_id=outcome.principal.token_id, model=outcome.model, stream=outcome.stream, status=outcome.status,
            prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
            latency_ms=round((outcome.ended_at - outcome.started_at) * 1000),
            ttft_ms=None if outcome.ttft_s is None else round((outcome.ttft_s - outcome.started_at) * 1000),
            cost=outcome.cost, group_id=outcome.principal.group_id or None, endpoint=outcome.endpoint,
        ))
        self._last_used[outcome.principal.token_id] = now
        self._on_record(outcome)

    def settle_later(self, handle: JobHandle, outcome: Outcome) -> None:
        """After a cancel, wait briefly for the worker's final count of what it produced, then record it."""
        task = asyncio.get_running_loop().create_task(self._settle(handle, outcome))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, handle: JobHandle, outcome: Outcome) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settle_s):
                while True:
                    event = await handle.next()
                    if isinstance(event, Done | Failed):
                        outcome.settle(event, handle.delivered_pieces)
                        break
        outcome.status = 499
        self.record(outcome)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            await self.flush()

    async def close(self) -> None:
        if self._settling:
            await asyncio.wait(list(self._settling), timeout=self._settle_s)
        await self.flush()

    async def flush(self) -> None:
        if not self._records and not self._last_used:
            return
        records, self._records = self._records, []
        last_used, self._last_used = self._last_used, {}
        try:
            async with self._sessions() as session:
                await write_usage(session, records, last_used)
        except (SQLAlchemyError, OSError):
            log.exception("could not write %d usage records; keeping them for the next flush", len(records))
            self._records[:0] = records
            for token_id, moment in last_used.items():
                self._last_used.setdefault(token_id, moment)

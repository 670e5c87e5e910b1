"""Requests-per-minute, tokens-per-minute, tokens-per-day and concurrency limits and budgets (per day, per
month, in all), enforced atomically in Redis for every gateway process: tokens and the most a request may
cost are reserved at admission and settled to the exact count and cost later.

Each limited subject (a token, a user or a group) has its own keys under the hash tag ``{lim:SUBJECT}``,
so each script touches one cluster slot; a request limited by several subjects is admitted by each in
turn, and the reservations already made are released when a later one refuses.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from modelport.protocol import keys, limit_scripts, scripts
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.errors import QuotaExceeded, RateLimited, Unavailable
from modelport.protocol.spend import Periods, micros, money, periods

log = logging.getLogger(__name__)
UTC_ZONE = ZoneInfo("UTC")

REASONS = {
    b"requests": "Requests per minute",
    b"tokens": "Tokens per minute",
    b"daily_tokens": "Tokens per day",
    b"concurrency": "Concurrent requests",
}
BUDGETS = {b"budget_day": "daily budget", b"budget_month": "monthly budget", b"budget_total": "total budget"}


@dataclass(frozen=True)
class LimitSubject:
    """One set of limits and whom it counts: ``token:12``, ``user:3`` or ``group:5`` (``label`` says it in words:
    ``group lab``). Zero means unlimited; budgets are in the installation's currency."""

    name: str
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    tokens_per_day: int = 0
    concurrent_requests: int = 0
    budget_day: float = 0.0
    budget_month: float = 0.0
    budget_total: float = 0.0
    label: str = ""

    def budgets(self) -> list[int]:
        return [micros(self.budget_day), micros(self.budget_month), micros(self.budget_total)]


@dataclass
class Admission:
    """What a request holds: its reservations (tokens, and cost in micro-units within ``periods``), to settle
    when it ends, and the headers to send."""

    request_id: str
    estimate: int
    cost: int = 0
    periods: Periods | None = None
    subjects: list[LimitSubject] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BudgetAlert:
    """A budget that reached 80 % or 100 % in its period."""

    subject: LimitSubject
    budget: str  # day, month or total
    level: int
    spent: int  # micro-units
    limit: int


class RateLimiter:
    def __init__(self, redis: Redis, lease_ms: int, currency: str = "USD",
                 on_alert: Callable[[BudgetAlert], None] = lambda _alert: None,
                 spent: Callable[[LimitSubject, Periods], Awaitable[tuple[float, float, float]]] | None = None) -> None:
        """``spent`` says what a subject spent in the current day and month and in all (from the usage rows)."""
        self._admit = redis.register_script(limit_scripts.ADMIT)
        self._seed = redis.register_script(limit_scripts.SEED)
        self._spent = spent
        self._settle = redis.register_script(limit_scripts.SETTLE)
        self._renew = redis.register_script(scripts.RENEW_HELD)
        self._lease_ms = lease_ms
        self._currency = currency
        self._on_alert = on_alert
        self._settling: set[asyncio.Task[None]] = set()
        self._live: dict[str, Admission] = {}  # admissions holding concurrency slots, by request id

    async def renew(self) -> None:
        """Extend the concurrency slots of this process's live requests by a lease (called every third of
        one); a gateway that dies stops renewing, and its slots are free within a lease."""
        held: dict[str, list[str]] = {}
        for admission in list(self._live.values()):
            for subject in admission.subjects:
                held.setdefault(subject.name, []).append(admission.request_id)
        for subject_name, request_ids in held.items():
            await self._renew(keys=[keys.limit_keys(subject_name)[3]], args=[self._lease_ms, *request_ids])

    async def admit(self, subjects: list[LimitSubject], estimate: int, cost: float = 0.0,
                    now: datetime | None = None, zone: ZoneInfo = UTC_ZONE) -> Admission:
        """Count the request against each subject and reserve its tokens and ``cost`` (the most it may cost)
        in the budget periods of ``now``; 429 when a limit or budget refuses it. Without subjects there is
        nothing to count or reserve."""
        if not subjects:
            return Admission(request_id="", estimate=estimate)
        now = now or datetime.now(UTC)
        admission = Admission(request_id=uuid.uuid4().hex, estimate=estimate, cost=micros(cost),
                              periods=periods(now, zone))
        assert admission.periods is not None
        day_reset, month_reset = admission.periods.reset_ms(now)
        for subject in subjects:
            args: list[str | int | float] = [
                subject.requests_per_minute, subject.tokens_per_minute, subject.tokens_per_day,
                subject.concurrent_requests, estimate, admission.request_id, self._lease_ms, *subject.budgets(),
                admission.cost, admission.periods.day, admission.periods.month, day_reset, month_reset]
            try:
                reply = await self._admit(keys=keys.limit_keys(subject.name), args=args)
                if reply[0] == b"unseeded":
                    await self._seed_spend(subject, admission.periods)
                    reply = await self._admit(keys=keys.limit_keys(subject.name), args=args)
            except QUEUE_ERRORS:
                log.exception("could not check the limits of %s", subject.name)
                await self.settle(admission, 0, release=True)
                raise Unavailable("The rate limiter is unreachable; try again shortly.",
                                  code="queue_unavailable") from None
            verdict, retry_ms, requests, tokens, reset_ms = reply[:5]
            if verdict != b"ok":
                await self.settle(admission, 0, release=True)
                raise self._refusal(subject, verdict, int(retry_ms), reply[5:], now, zone,
                                    _headers(subject, int(requests), int(tokens), int(reset_ms)))
            admission.subjects.append(subject)
            admission.headers = admission.headers or _headers(subject, int(requests), int(tokens), int(reset_ms))
        if admission.subjects:
            self._live[admission.request_id] = admission
        return admission

    async def _seed_spend(self, subject: LimitSubject, current: Periods) -> None:
        """A budgeted subject's spend as the usage rows have it, into Redis (the first time, or after Redis lost
        it); without a source of rows, it starts from nothing."""
        day, month, total = await self._spent(subject, current) if self._spent else (0.0, 0.0, 0.0)
        await self._seed(keys=keys.limit_keys(subject.name), args=[
            current.day, current.month, micros(day), micros(month), micros(total)])

    def _refusal(self, subject: LimitSubject, verdict: bytes, retry_ms: int, spend: list[Any], now: datetime,
                 zone: ZoneInfo, headers: dict[str, str]) -> RateLimited:
        whose = subject.label or subject.name.split(":")[0]
        if verdict in BUDGETS:
            spent, budget = int(spend[0]), int(spend[1])
            resets = ("it is a total: an administrator can raise it" if not retry_ms else
                      f"it resets at {(now + timedelta(milliseconds=retry_ms)).astimezone(zone):%Y-%m-%d %H:%M %Z}")
            return QuotaExceeded(f"The {BUDGETS[verdict]} of {whose} ({money(budget, self._currency)}) is spent: "
                                 f"{money(spent, self._currency)} used; {resets}.",
                                 retry_after=max(1, -(-retry_ms // 1000)) if retry_ms else None, headers=headers)
        retry_after = max(1, -(-retry_ms // 1000))
        return RateLimited(f"{REASONS[verdict]} limit of {whose} reached; retry after {retry_after} s.",
                           code="rate_limit_exceeded", retry_after=retry_after, headers=headers)

    async def settle(self, admission: Admission, tokens: int, *, release: bool = False, cost: float = 0.0) -> None:
        """Replace the reservations by the tokens and ``cost`` actually used and free the concurrency slot;
        ``release`` forgets the request altogether (it never reached a worker)."""
        self._live.pop(admission.request_id, None)
        day, month = (admission.periods.day, admission.periods.month) if admission.periods else ("", "")
        for subject in admission.subjects:
            try:
                crossed = await self._settle(keys=keys.limit_keys(subject.name), args=[
                    admission.request_id, admission.estimate, tokens, int(release), admission.cost,
                    0 if release else micros(cost), day, month, *subject.budgets()])
            except QUEUE_ERRORS:
                log.warning("could not settle the limits of %s; its reservation expires by itself", subject.name)
                continue
            for i in range(0, len(crossed), 4):
                budget, level, spent, limit = crossed[i:i + 4]
                self._on_alert(BudgetAlert(subject, budget.decode(), int(level), int(spent), int(limit)))
        admission.subjects = []

    def settle_soon(self, admission: Admission, tokens: int, *, release: bool = False, cost: float = 0.0) -> None:
        """Settle off the request path (from the usage recorder's synchronous hook, or a request that ends
        before it reached a worker)."""
        task = asyncio.get_running_loop().create_task(self.settle(admission, tokens, release=release, cost=cost))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)


def _headers(subject: LimitSubject, requests: int, tokens: int, reset_ms: int) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers for the first limited subject."""
    headers: dict[str, str] = {}
    if subject.requests_per_minute:
        headers["x-ratelimit-limit-requests"] = str(subject.requests_per_minute)
        headers["x-ratelimit-remaining-requests"] = str(max(0, subject.requests_per_minute - requests))
        headers["x-ratelimit-reset-requests"] = f"{reset_ms / 1000:.3f}s"
    if subject.tokens_per_minute:
        headers["x-ratelimit-limit-tokens"] = str(subject.tokens_per_minute)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, subject.tokens_per_minute - tokens))
        headers["x-ratelimit-reset-tokens"] = f"{reset_ms / 1000:.3f}s"
    return headers

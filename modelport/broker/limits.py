"""Requests-per-minute, tokens-per-minute, tokens-per-day and concurrency limits, enforced atomically in
Redis for every gateway process: tokens are reserved at admission and settled to the exact count later.

Each limited subject (a token, a user or a group) has its own keys under the hash tag ``{lim:SUBJECT}``,
so each script touches one cluster slot; a request limited by several subjects is admitted by each in
turn, and the reservations already made are released when a later one refuses.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from redis.asyncio import Redis

from modelport.protocol import keys, limit_scripts, scripts
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.errors import RateLimited, Unavailable

log = logging.getLogger(__name__)

REASONS = {
    b"requests": "Requests per minute",
    b"tokens": "Tokens per minute",
    b"daily_tokens": "Tokens per day",
    b"concurrency": "Concurrent requests",
}


@dataclass(frozen=True)
class LimitSubject:
    """One set of limits and whom it counts: ``token:12``, ``user:3`` or ``group:5``. Zero means unlimited."""

    name: str
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    tokens_per_day: int = 0
    concurrent_requests: int = 0


@dataclass
class Admission:
    """What a request holds: its reservations, to settle when it ends, and the headers to send."""

    request_id: str
    estimate: int
    subjects: list[LimitSubject] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


class RateLimiter:
    def __init__(self, redis: Redis, lease_ms: int) -> None:
        self._admit = redis.register_script(limit_scripts.ADMIT)
        self._settle = redis.register_script(limit_scripts.SETTLE)
        self._renew = redis.register_script(scripts.RENEW_HELD)
        self._lease_ms = lease_ms
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

    async def admit(self, subjects: list[LimitSubject], estimate: int) -> Admission:
        admission = Admission(request_id=uuid.uuid4().hex, estimate=estimate)
        for subject in subjects:
            try:
                reply = await self._admit(keys=keys.limit_keys(subject.name), args=[
                    subject.requests_per_minute, subject.tokens_per_minute, subject.tokens_per_day,
                    subject.concurrent_requests, estimate, admission.request_id, self._lease_ms])
            except QUEUE_ERRORS:
                log.exception("could not check the limits of %s", subject.name)
                await self.settle(admission, 0, release=True)
                raise Unavailable("The rate limiter is unreachable; try again shortly.",
                                  code="queue_unavailable") from None
            verdict, retry_ms, requests, tokens, reset_ms = reply
            if verdict != b"ok":
                await self.settle(admission, 0, release=True)
                raise RateLimited(
                    f"{REASONS[verdict]} limit of {subject.name.split(':')[0]} reached; retry after "
                    f"{max(1, -(-int(retry_ms) // 1000))} s.", code="rate_limit_exceeded",
                    retry_after=max(1, -(-int(retry_ms) // 1000)),
                    headers=_headers(subject, int(requests), int(tokens), int(reset_ms)))
            admission.subjects.append(subject)
            admission.headers = admission.headers or _headers(subject, int(requests), int(tokens), int(reset_ms))
        if admission.subjects:
            self._live[admission.request_id] = admission
        return admission

    async def settle(self, admission: Admission, tokens: int, *, release: bool = False) -> None:
        """Replace the reservation by the tokens actually used and free the concurrency slot; ``release``
        forgets the request altogether (it never reached a worker)."""
        self._live.pop(admission.request_id, None)
        for subject in admission.subjects:
            try:
                await self._settle(keys=keys.limit_keys(subject.name),
                                   args=[admission.request_id, admission.estimate, tokens, int(release)])
            except QUEUE_ERRORS:
                log.warning("could not settle the limits of %s; its reservation expires by itself", subject.name)
        admission.subjects = []


    def settle_soon(self, admission: Admission, tokens: int, *, release: bool = False) -> None:
        """Settle off the request path (from the usage recorder's synchronous hook, or a request that ends
        before it reached a worker)."""
        task = asyncio.get_running_loop().create_task(self.settle(admission, tokens, release=release))
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

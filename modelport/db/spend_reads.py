"""What spend reports read: usage rows summed by day, model, user and group over a span of time, with the
names of users and groups, and the budgets that apply to a user."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from sqlalchemy import func
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.db.tables import Group, LimitScope, Membership, RateLimit, UsageRecord, User, as_utc


@dataclass
class Totals:
    requests: int = 0
    tokens: int = 0
    cost: float = 0.0

    def add(self, requests: int, tokens: int, cost: float) -> None:
        self.requests += requests
        self.tokens += tokens
        self.cost += cost


@dataclass
class Spend:
    """Usage over a span, summed in all and per day (in the report's time zone), model, user and group."""

    total: Totals = field(default_factory=Totals)
    by_day: dict[str, Totals] = field(default_factory=lambda: defaultdict(Totals))
    by_model: dict[str, Totals] = field(default_factory=lambda: defaultdict(Totals))
    by_user: dict[str, Totals] = field(default_factory=lambda: defaultdict(Totals))
    by_group: dict[str, Totals] = field(default_factory=lambda: defaultdict(Totals))
    # (group, user, model) -> totals: the chargeback lines
    lines: dict[tuple[str, str, str], Totals] = field(default_factory=lambda: defaultdict(Totals))


async def spend(session: AsyncSession, start: datetime, end: datetime, zone: tzinfo, *, user_id: int | None = None,
                group: str | None = None) -> Spend:
    """Usage from ``start`` to ``end`` (of one user, or charged to one group), summed in the database per
    hour of the zone's days, model, user and group, and then per report line."""
    created = col(UsageRecord.created_at)
    hour = (func.strftime("%Y-%m-%d %H", created) if _dialect(session) == "sqlite" else
            func.to_char(func.date_trunc("hour", func.timezone("UTC", created)), "YYYY-MM-DD HH24"))
    query = (select(hour, UsageRecord.model, UsageRecord.user_id, UsageRecord.group_id, func.count(),  # type: ignore[call-overload]
                    func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens), func.sum(UsageRecord.cost))
             .where(col(UsageRecord.created_at) >= start, col(UsageRecord.created_at) < end)
             .group_by(hour, col(UsageRecord.model), col(UsageRecord.user_id), col(UsageRecord.group_id)))
    if user_id is not None:
        query = query.where(col(UsageRecord.user_id) == user_id)
    if group is not None:
        query = query.where(col(UsageRecord.group_id).in_(select(Group.id).where(Group.name == group)))
    rows = (await session.exec(query)).all()
    # Only the names the rows need (the gateway's /v1/usage runs this: nothing here is O(users)).
    users = {row.id: row.name for row in (await session.exec(
        select(User).where(col(User.id).in_({row[2] for row in rows})))).all()}
    groups = {row.id: row.name for row in (await session.exec(
        select(Group).where(col(Group.id).in_({row[3] for row in rows if row[3] is not None})))).all()}
    found = Spend()
    for at, model, user, charged, requests, tokens, cost in rows:
        day = as_utc(datetime.strptime(at, "%Y-%m-%d %H")).astimezone(zone).date().isoformat()
        user_name, group_name = users.get(user, f"#{user}"), groups.get(charged, "(no group)")
        amounts = (int(requests), int(tokens or 0), float(cost or 0))
        for totals in (found.total, found.by_day[day], found.by_model[model], found.by_user[user_name],
                       found.by_group[group_name], found.lines[group_name, user_name, model]):
            totals.add(*amounts)
    return found


def _dialect(session: AsyncSession) -> str:
    bind = session.bind
    return bind.dialect.name if bind is not None else "sqlite"


async def limits_of(session: AsyncSession, user_id: int) -> list[tuple[str, str, RateLimit]]:
    """The limits and budgets over a user's requests (their own and their groups'): scope, name and the row."""
    groups = {row.id: row.name for row in (await session.exec(select(Group).join(
        Membership, col(Membership.group_id) == col(Group.id)).where(Membership.user_id == user_id))).all()}
    rows = await session.exec(select(RateLimit).where(or_(
        (col(RateLimit.scope) == LimitScope.USER) & (col(RateLimit.subject_id) == user_id),
        (col(RateLimit.scope) == LimitScope.GROUP) & col(RateLimit.subject_id).in_(list(groups)))))
    user = await session.get(User, user_id)
    return [(limit.scope.value, groups.get(limit.subject_id, user.name if user else "?"), limit)
            for limit in rows.all()]


CHARGEBACK_COLUMNS = ("month", "group", "user", "model", "requests", "tokens", "cost", "currency")


def chargeback(found: Spend, month: str, currency: str) -> list[dict[str, str | int]]:
    """The chargeback lines of a month: per group, user and model, requests, tokens and cost."""
    return [{"month": month, "group": group, "user": user, "model": model, "requests": totals.requests,
             "tokens": totals.tokens, "cost": f"{totals.cost:.6f}", "currency": currency}
            for (group, user, model), totals in sorted(found.lines.items())]

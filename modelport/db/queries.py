"""The gateway's few queries: who owns a token and what may they use, which models (LLMs, aliases, presets)
exist, usage writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.broker.limits import LimitSubject
from modelport.db.tables import (
    LLM,
    AliasGrant,
    ApiToken,
    AuditEntry,
    Grant,
    Group,
    LimitScope,
    Membership,
    ModelAlias,
    Preset,
    PresetVisibility,
    RateLimit,
    UsageRecord,
    User,
    as_utc,
)
from modelport.protocol.presets import PresetSettings
from modelport.protocol.registrations import Registration
from modelport.protocol.spend import FREE, Price


@dataclass(frozen=True)
class TokenOwner:
    token_id: int
    secret_hash: str
    user_id: int
    user_name: str
    usable: bool
    revoked: bool
    expires_at: datetime | None
    groups: frozenset[int]  # what they grant is read once per set of groups (Grants), not per token
    own_presets: tuple[tuple[str, str], ...]  # the owner's private presets, each with its LLM
    limits: tuple[LimitSubject, ...]
    priority: int
    group_id: int  # the group that gives the priority (highest priority, then lowest id); 0 for none


@dataclass(frozen=True)
class Grants:
    """What a set of groups lets its members use: the enabled LLMs granted to any of them, and every name their
    members may send (those LLMs, their aliases and the aliases granted by name, the public presets and the
    groups' own of those LLMs) but for the presets a member keeps private."""

    llms: frozenset[str]
    names: frozenset[str]

    def with_own(self, own_presets: Sequence[tuple[str, str]]) -> frozenset[str]:
        """The names a member may send who also owns ``own_presets`` (preset, LLM): those of granted LLMs."""
        own = {preset for preset, llm in own_presets if llm in self.llms}
        return self.names | own if own else self.names


@dataclass(frozen=True)
class ModelEntry:
    """A name a request may use: an LLM, an alias of one or a preset of one."""

    name: str
    max_queue: int
    created: int
    llm: str  # the LLM whose workers serve it: its own name, for an LLM
    preset: PresetSettings | None = None
    fallbacks: tuple[str, ...] = ()  # the LLM's fallbacks, in order
    deployments: int = 1  # how many deployments serve the LLM's queue
    price: Price = FREE  # the LLM's (its deployment ``default``)
    deployment_prices: tuple[tuple[str, Price], ...] = ()  # further deployments priced apart
    kind: str = "chat"  # the LLM's: chat or embedding
    scale_to_zero: bool = False  # with no live worker, its requests wait in the queue for one

    def price_of(self, deployment: str | None) -> Price:
        return next((price for name, price in self.deployment_prices if name == deployment), self.price)

    def dearest(self) -> Price:
        """The price a reservation assumes (the LLM's deployments may differ)."""
        prices = [self.price, *(price for _, price in self.deployment_prices)]
        return Price(max(price.input for price in prices), max(price.output for price in prices))


async def token_owner(session: AsyncSession, secret_hash: str) -> TokenOwner | None:
    row = (await session.exec(
        select(ApiToken, User).join(User, col(User.id) == col(ApiToken.user_id))
        .where(ApiToken.secret_hash == secret_hash)
    )).first()
    if row is None:
        return None
    token, user = row
    assert token.id is not None and user.id is not None
    memberships = (await session.exec(
        select(Membership.group_id, Group.priority).join(Membership, col(Membership.group_id) == col(Group.id))
        .where(Membership.user_id == user.id).order_by(col(Group.priority).desc(), col(Group.id)))).all()
    group_id, priority = memberships[0] if memberships else (0, 0)
    return TokenOwner(
        token_id=token.id, secret_hash=token.secret_hash, user_id=user.id, user_name=user.name,
        usable=user.active and user.deleted_at is None, revoked=token.revoked_at is not None,
        expires_at=as_utc(token.expires_at) if token.expires_at else None,
        groups=frozenset(group for group, _ in memberships), own_presets=await own_presets(session, user.id),
        limits=await applicable_limits(session, token.id, user.id), priority=priority or 0, group_id=group_id or 0,
    )


async def permitted_models(session: AsyncSession, user_id: int) -> frozenset[str]:
    """Every name the user may send: what their groups grant, and their private presets of granted LLMs."""
    groups = frozenset((await session.exec(select(Membership.group_id).where(Membership.user_id == user_id))).all())
    return (await group_grants(session, groups)).with_own(await own_presets(session, user_id))


async def group_grants(session: AsyncSession, groups: frozenset[int]) -> Grants:
    """What the groups with these ids grant their members (see Grants)."""
    ids = sorted(groups)
    llms = frozenset(await _granted_llms(session, ids))
    aliases = (await session.exec(
        select(ModelAlias.name, LLM.name, col(ModelAlias.id).in_(
            select(AliasGrant.alias_id).where(col(AliasGrant.group_id).in_(ids))))
        .join(LLM, col(LLM.id) == col(ModelAlias.llm_id)).where(col(LLM.enabled).is_(True))
    )).all()
    presets = (await session.exec(
        select(Preset.name, LLM.name).join(LLM, col(LLM.id) == col(Preset.llm_id))
        .where(col(Preset.enabled).is_(True), col(LLM.enabled).is_(True), or_(
            col(Preset.visibility) == PresetVisibility.PUBLIC,
            and_(col(Preset.visibility) == PresetVisibility.GROUP, col(Preset.group_id).in_(ids))))
    )).all()
    return Grants(llms, frozenset(llms | {alias for alias, llm, granted in aliases if granted or llm in llms}
                                  | {preset for preset, llm in presets if llm in llms}))


async def own_presets(session: AsyncSession, user_id: int) -> tuple[tuple[str, str], ...]:
    """The user's enabled private presets of enabled LLMs, each with its LLM."""
    return tuple((await session.exec(
        select(Preset.name, LLM.name).join(LLM, col(LLM.id) == col(Preset.llm_id))
        .where(col(Preset.enabled).is_(True), col(LLM.enabled).is_(True),
               col(Preset.visibility) == PresetVisibility.PRIVATE, col(Preset.owner_id) == user_id)
    )).all())


async def granted_llms(session: AsyncSession, user_id: int) -> set[str]:
    """The enabled LLMs the user's groups were granted."""
    return await _granted_llms(session, select(Membership.group_id).where(Membership.user_id == user_id))


async def _granted_llms(session: AsyncSession, groups: Any) -> set[str]:
    """The enabled LLMs granted to ``groups`` (ids, or a query of them)."""
    return set((await session.exec(
        select(LLM.name).distinct().join(Grant, col(Grant.llm_id) == col(LLM.id))
        .where(col(Grant.group_id).in_(groups), col(LLM.enabled).is_(True))
    )).all())


async def applicable_limits(session: AsyncSession, token_id: int, user_id: int) -> tuple[LimitSubject, ...]:
    """The limits and budgets a request with this token must pass: the token's, its owner's and each of their
    groups', each labelled with its subject's name."""
    groups = select(Membership.group_id).where(Membership.user_id == user_id)
    rows = (await session.exec(select(RateLimit).where(or_(
        and_(col(RateLimit.scope) == LimitScope.TOKEN, col(RateLimit.subject_id) == token_id),
        and_(col(RateLimit.scope) == LimitScope.USER, col(RateLimit.subject_id) == user_id),
        and_(col(RateLimit.scope) == LimitScope.GROUP, col(RateLimit.subject_id).in_(groups)),
    )).order_by(col(RateLimit.scope), col(RateLimit.subject_id)))).all()
    group_ids = [row.subject_id for row in rows if row.scope is LimitScope.GROUP]
    names: dict[tuple[LimitScope, int | None], str] = {
        (LimitScope.GROUP, group.id): group.name for group in (await session.exec(
            select(Group).where(col(Group.id).in_(group_ids)))).all()} if group_ids else {}
    scopes = {row.scope for row in rows}
    if LimitScope.USER in scopes:
        user = await session.get(User, user_id)
        names[LimitScope.USER, user_id] = user.name if user else str(user_id)
    if LimitScope.TOKEN in scopes:
        token = await session.get(ApiToken, token_id)
        names[LimitScope.TOKEN, token_id] = f"{token.prefix}…" if token else str(token_id)
    return tuple(
        LimitSubject(f"{row.scope.value}:{row.subject_id}", row.requests_per_minute, row.tokens_per_minute,
                     row.tokens_per_day, row.concurrent_requests, row.budget_day, row.budget_month, row.budget_total,
                     label=f"{row.scope.value} {names.get((row.scope, row.subject_id), row.subject_id)}")
        for row in rows
    )


async def enabled_models(session: AsyncSession) -> dict[str, ModelEntry]:
    """Every name a request may use whose LLM is enabled, with what serves it."""
    llms = {llm.name: ModelEntry(llm.name, llm.max_queue, epoch_seconds(llm.created_at), llm.name,
                                 fallbacks=tuple(llm.fallbacks), deployments=1 + len(llm.deployments),
                                 price=Price(llm.input_price, llm.output_price),
                                 deployment_prices=deployment_prices(llm), kind=llm.kind,
                                 scale_to_zero=llm.scale_to_zero)
            for llm in (await session.exec(select(LLM).where(col(LLM.enabled).is_(True)))).all()}
    aliases = (await session.exec(select(ModelAlias, LLM.name).join(LLM, col(LLM.id) == col(ModelAlias.llm_id))
                                  .where(col(LLM.enabled).is_(True)))).all()
    presets = (await session.exec(select(Preset, LLM.name).join(LLM, col(LLM.id) == col(Preset.llm_id))
                                  .where(col(LLM.enabled).is_(True), col(Preset.enabled).is_(True)))).all()
    entries = dict(llms)
    for alias, llm in aliases:
        entries[alias.name] = replace(llms[llm], name=alias.name, created=epoch_seconds(alias.created_at))
    for preset, llm in presets:
        entries[preset.name] = replace(llms[llm], name=preset.name, created=epoch_seconds(preset.created_at),
                                       preset=preset_settings(preset))
    return entries


def deployment_prices(llm: LLM) -> tuple[tuple[str, Price], ...]:
    """The LLM's deployments that have prices of their own (``"price": {"input": X, "output": Y}``)."""
    return tuple((name, Price(float(spec["price"].get("input", 0)), float(spec["price"].get("output", 0))))
                 for name, spec in sorted(llm.deployments.items()) if isinstance(spec.get("price"), dict))


async def presets_named(session: AsyncSession, names: Sequence[str]) -> list[tuple[Preset, str]]:
    """These presets with the names of their LLMs, by name."""
    rows = await session.exec(select(Preset, LLM.name).join(LLM, col(LLM.id) == col(Preset.llm_id))
                              .where(col(Preset.name).in_(names)).order_by(col(Preset.name)))
    return list(rows.all())


def preset_settings(preset: Preset) -> PresetSettings:
    return PresetSettings.model_validate(preset.model_dump(include=set(PresetSettings.model_fields)))


def epoch_seconds(moment: datetime | None) -> int:
    return int(as_utc(moment).timestamp()) if moment else 0


async def registrations(session: AsyncSession) -> list[Registration]:
    """Every registered LLM as workers see it (see protocol.registrations)."""
    llms = await session.exec(select(LLM).order_by(col(LLM.name)))
    return [Registration(name=llm.name, backend=llm.backend, config=llm.config, enabled=llm.enabled,
                         deployments=llm.deployments, kind=llm.kind) for llm in llms.all()]


async def spent_by(session: AsyncSession, subject: str, day_start: datetime, month_start: datetime
                   ) -> tuple[float, float, float]:
    """What a limited subject (``token:ID``, ``user:ID`` or ``group:ID``) was charged since the day's and the
    month's start and in all, from the usage rows (indexed by subject and time)."""
    scope, _, subject_id = subject.partition(":")
    column = {"token": UsageRecord.token_id, "user": UsageRecord.user_id, "group": UsageRecord.group_id}[scope]
    created, cost = col(UsageRecord.created_at), col(UsageRecord.cost)
    day, month, total = (await session.exec(select(
        func.sum(cost).filter(created >= day_start), func.sum(cost).filter(created >= month_start), func.sum(cost))
        .where(col(column) == int(subject_id)))).one()
    return float(day or 0), float(month or 0), float(total or 0)


async def write_usage(session: AsyncSession, records: Sequence[Mapping[str, Any]],
                      last_used: dict[int, datetime]) -> None:
    """Usage rows (a ``UsageRecord``'s fields each) in one bulk insert, and the tokens' last use."""
    if records:
        await session.execute(insert(UsageRecord), list(records))
    for token_id, moment in last_used.items():
        await session.exec(update(ApiToken).where(col(ApiToken.id) == token_id).values(last_used_at=moment))
    await session.commit()


async def user_named(session: AsyncSession, name: str) -> User | None:
    return (await session.exec(select(User).where(User.name == name))).first()


async def deactivated_by_directory(session: AsyncSession, name: str) -> bool:
    """Whether the last change to this user's account was the directory deactivating them (so a successful
    directory login may undo it; an administrator's later change may not be)."""
    last = (await session.exec(
        select(AuditEntry).where(AuditEntry.target == name, col(AuditEntry.action).startswith("user."))
        .order_by(col(AuditEntry.id).desc()).limit(1))).first()
    return last is not None and (last.actor, last.action) == ("ldap", "user.deactivate")

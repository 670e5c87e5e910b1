"""What the CLI's read commands print: users, groups, LLMs, presets, tokens and limits as plain records with
stable keys (the ``--json`` contract the README documents)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.db.directory import one, prefix_matches
from modelport.db.tables import (
    LLM,
    AliasGrant,
    ApiToken,
    Grant,
    Group,
    LimitScope,
    Membership,
    ModelAlias,
    Preset,
    RateLimit,
    UsageRecord,
    User,
    as_utc,
    utcnow,
)
from modelport.protocol.errors import Cancelled, InvalidRequest, NotFound

Record = dict[str, Any]


def moment(value: datetime | None) -> str | None:
    """A stored timestamp as ISO 8601 in UTC, to the second."""
    return as_utc(value).replace(microsecond=0).isoformat() if value is not None else None


async def _group_names_by_user(session: AsyncSession) -> dict[int, list[str]]:
    names: dict[int, list[str]] = defaultdict(list)
    rows = await session.exec(select(Membership.user_id, Group.name).join(Group, col(Group.id) ==
                                                                          col(Membership.group_id))
                              .order_by(col(Group.name)))
    for user_id, group_name in rows.all():
        names[user_id].append(group_name)
    return names


def _user_record(user: User, groups: list[str]) -> Record:
    return {"name": user.name, "display_name": user.display_name, "email": user.email, "source": user.source.value,
            "admin": user.is_admin, "active": user.active and user.deleted_at is None,
            "removed": user.deleted_at is not None, "groups": groups, "created_at": moment(user.created_at)}


async def users(session: AsyncSession, group: str | None = None) -> list[Record]:
    """Every user (removed ones too, marked), by name; with ``group``, its members only."""
    groups = await _group_names_by_user(session)
    found = (await session.exec(select(User).order_by(col(User.name)))).all()
    return [_user_record(user, groups.get(user.id or 0, [])) for user in found
            if group is None or group in groups.get(user.id or 0, [])]


async def user(session: AsyncSession, name: str) -> Record:
    found: User = await one(session, User, name)
    groups = await _group_names_by_user(session)
    return {**_user_record(found, groups.get(found.id or 0, [])), "tokens": await tokens(session, user_name=name)}


async def groups(session: AsyncSession) -> list[Record]:
    """Every group with its members and the models granted to it, by name."""
    members: dict[int, list[str]] = defaultdict(list)
    for group_id, user_name in (await session.exec(
            select(Membership.group_id, User.name).join(User, col(User.id) == col(Membership.user_id))
            .order_by(col(User.name)))).all():
        members[group_id].append(user_name)
    models: dict[int, list[str]] = defaultdict(list)
    for group_id, model in (await session.exec(select(Grant.group_id, LLM.name).join(
            LLM, col(LLM.id) == col(Grant.llm_id)))).all():
        models[group_id].append(model)
    for group_id, model in (await session.exec(select(AliasGrant.group_id, ModelAlias.name).join(
            ModelAlias, col(ModelAlias.id) == col(AliasGrant.alias_id)))).all():
        models[group_id].append(model)
    return [{"name": group.name, "description": group.description, "permissions": group.permissions,
             "priority": group.priority, "members": members.get(group.id or 0, []),
             "models": sorted(models.get(group.id or 0, [])), "created_at": moment(group.created_at)}
            for group in (await session.exec(select(Group).order_by(col(Group.name)))).all()]


async def group(session: AsyncSession, name: str) -> Record:
    await one(session, Group, name)
    return next(record for record in await groups(session) if record["name"] == name)


async def llms(session: AsyncSession) -> list[Record]:
    """Every LLM with its aliases, fallbacks, deployments and the groups granted it, by name. The backend
    config holds names of secrets (``api_key_env``), never secrets."""
    aliases: dict[int, list[str]] = defaultdict(list)
    for llm_id, alias in (await session.exec(select(ModelAlias.llm_id, ModelAlias.name)
                                             .order_by(col(ModelAlias.name)))).all():
        aliases[llm_id].append(alias)
    granted: dict[int, list[str]] = defaultdict(list)
    for llm_id, group_name in (await session.exec(select(Grant.llm_id, Group.name).join(
            Group, col(Group.id) == col(Grant.group_id)).order_by(col(Group.name)))).all():
        granted[llm_id].append(group_name)
    return [{"name": llm.name, "kind": llm.kind, "backend": llm.backend, "enabled": llm.enabled,
             "max_queue": llm.max_queue, "scale_to_zero": llm.scale_to_zero,
             "input_price": llm.input_price, "output_price": llm.output_price,
             "cached_input_price": llm.cached_input_price, "config": llm.config, "fallbacks": llm.fallbacks,
             "deployments": ["default", *sorted(llm.deployments)], "aliases": aliases.get(llm.id or 0, []),
             "groups": granted.get(llm.id or 0, []), "created_at": moment(llm.created_at)}
            for llm in (await session.exec(select(LLM).order_by(col(LLM.name)))).all()]


async def llm(session: AsyncSession, name: str) -> Record:
    found: LLM = await one(session, LLM, name)
    record = next(record for record in await llms(session) if record["name"] == name)
    record["deployment_configs"] = {deployment: {"backend": spec["backend"], "config": spec["config"],
                                                 "price": spec.get("price")}
                                    for deployment, spec in sorted(found.deployments.items())}
    return record


async def presets(session: AsyncSession) -> list[Record]:
    rows = (await session.exec(select(Preset, LLM.name).join(LLM, col(LLM.id) == col(Preset.llm_id))
                               .order_by(col(Preset.name)))).all()
    group_names = {group.id: group.name for group in (await session.exec(select(Group))).all()}
    owner_ids = {preset.owner_id for preset, _ in rows if preset.owner_id is not None}
    owners = {user.id: user.name for user in (await session.exec(select(User).where(col(User.id).in_(owner_ids))))}
    return [{"name": preset.name, "llm": llm_name, "visibility": preset.visibility.value,
             "group": group_names.get(preset.group_id), "owner": owners.get(preset.owner_id),
             "enabled": preset.enabled, "description": preset.description, "system_prompt": preset.system_prompt,
             "temperature": preset.temperature, "top_p": preset.top_p, "max_tokens": preset.max_tokens,
             "stop": preset.stop, "created_at": moment(preset.created_at)} for preset, llm_name in rows]


async def preset(session: AsyncSession, name: str) -> Record:
    await one(session, Preset, name)
    return next(record for record in await presets(session) if record["name"] == name)


def _token_record(token: ApiToken, owner: str) -> Record:
    now = utcnow()
    expired = token.expires_at is not None and as_utc(token.expires_at) <= now
    state = "revoked" if token.revoked_at is not None else "expired" if expired else "active"
    return {"prefix": token.prefix, "name": token.name, "user": owner, "state": state,
            "created_at": moment(token.created_at), "expires_at": moment(token.expires_at),
            "revoked_at": moment(token.revoked_at), "last_used_at": moment(token.last_used_at)}


async def tokens(session: AsyncSession, user_name: str | None = None) -> list[Record]:
    """Tokens (never their secrets or hashes), newest first; with ``user_name``, that user's."""
    query = select(ApiToken, User.name).join(User, col(User.id) == col(ApiToken.user_id))
    if user_name is not None:
        await one(session, User, user_name)
        query = query.where(User.name == user_name)
    return [_token_record(token, owner) for token, owner in
            (await session.exec(query.order_by(col(ApiToken.id).desc()))).all()]


async def token(session: AsyncSession, prefix: str) -> Record:
    rows = (await session.exec(select(ApiToken, User.name).join(User, col(User.id) == col(ApiToken.user_id))
                               .where(prefix_matches(prefix, exact=False)))).all()
    if not rows:
        raise NotFound(f"No token starts with '{prefix}'.")
    if len(rows) > 1:
        raise InvalidRequest(f"'{prefix}' matches {len(rows)} tokens; give more of the prefix.")
    return _token_record(*rows[0])


async def limits(session: AsyncSession) -> list[Record]:
    """Every limit with the name of its subject (a token's prefix, a user's or group's name)."""
    subjects = {LimitScope.USER: {user.id: user.name for user in (await session.exec(select(User))).all()},
                LimitScope.GROUP: {group.id: group.name for group in (await session.exec(select(Group))).all()},
                LimitScope.TOKEN: {token.id: token.prefix for token in (await session.exec(select(ApiToken))).all()}}
    return [{"scope": limit.scope.value, "subject": subjects[limit.scope].get(limit.subject_id),
             "requests_per_minute": limit.requests_per_minute, "tokens_per_minute": limit.tokens_per_minute,
             "tokens_per_day": limit.tokens_per_day, "concurrent_requests": limit.concurrent_requests,
             "budget_day": limit.budget_day, "budget_month": limit.budget_month, "budget_total": limit.budget_total}
            for limit in (await session.exec(select(RateLimit).order_by(col(RateLimit.scope),
                                                                         col(RateLimit.subject_id)))).all()]


async def status_rows(session: AsyncSession) -> tuple[list[Record], dict[str, tuple[int, int]]]:
    """What status views join to the live state in Redis: every LLM, and its requests and errors of the last
    minute."""
    return await llms(session), await requests_since(session, utcnow() - timedelta(minutes=1))


async def requests_since(session: AsyncSession, since: datetime) -> dict[str, tuple[int, int]]:
    """Per model: the requests recorded since ``since`` and how many of them failed (an error status; a client
    that went away, 499, is not the model's failure)."""
    failed = and_(col(UsageRecord.status) >= 400, col(UsageRecord.status) != Cancelled.status)
    rows = await session.exec(select(UsageRecord.model, func.count(), func.count().filter(failed))
                              .where(col(UsageRecord.created_at) >= since).group_by(col(UsageRecord.model)))
    return {model: (int(total), int(failed)) for model, total, failed in rows.all()}

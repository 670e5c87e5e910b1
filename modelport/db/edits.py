"""Changing and removing what exists: users, groups, memberships, grants, LLM settings, presets' state and
limits; each change audited (creation lives in ``directory``)."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.db.directory import PASSWORDS, audit, check_kind, one, subject_id
from modelport.db.serving import check_fallbacks
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
    User,
    utcnow,
)
from modelport.protocol.errors import InvalidRequest, NotFound
from modelport.protocol.registrations import DEFAULT_DEPLOYMENT

MAX_PRICE = 1_000_000.0
MAX_QUEUE = 100_000  # outstanding jobs an LLM's queue may be set to hold


async def set_user(session: AsyncSession, actor: str, name: str, *, admin: bool | None = None,
                   display_name: str | None = None, email: str | None = None, password: str | None = None) -> User:
    """Change a user; a new password ends their admin sessions."""
    user: User = await one(session, User, name)
    changed: dict[str, Any] = {}
    if admin is not None:
        user.is_admin = changed["admin"] = admin
    if display_name is not None:
        user.display_name = changed["display_name"] = _bounded(display_name, 256, "display_name")
    if email is not None:
        user.email = changed["email"] = _bounded(email, 256, "email") or None
    if password is not None:
        user.password_hash = PASSWORDS.hash(password)
        user.session_version += 1
        changed["password"] = "changed"
    session.add(user)
    audit(session, actor, "user.set", name, **changed)
    await session.commit()
    return user


def _bounded(value: str, most: int, param: str) -> str:
    if len(value) > most:
        raise InvalidRequest(f"'{param}' has at most {most} characters.", param=param)
    return value


async def set_user_enabled(session: AsyncSession, actor: str, name: str, enabled: bool) -> User:
    """Disable a user (their tokens and sessions stop working) or enable one again (a removed one too)."""
    user: User = await one(session, User, name)
    user.active = enabled
    if enabled:
        user.deleted_at = None
    else:
        user.session_version += 1
    session.add(user)
    audit(session, actor, "user.enable" if enabled else "user.disable", name)
    await session.commit()
    return user


async def remove_user(session: AsyncSession, actor: str, name: str) -> None:
    """Soft delete: the user stays for usage history, inactive, with their tokens revoked."""
    user: User = await one(session, User, name)
    user.active = False
    user.deleted_at = user.deleted_at or utcnow()
    user.session_version += 1
    session.add(user)
    for token in (await session.exec(select(ApiToken).where(ApiToken.user_id == user.id,
                                                             col(ApiToken.revoked_at).is_(None)))).all():
        token.revoked_at = utcnow()
        session.add(token)
    audit(session, actor, "user.remove", name)
    await session.commit()


async def leave(session: AsyncSession, actor: str, user_name: str, group_name: str) -> None:
    user: User = await one(session, User, user_name)
    group: Group = await one(session, Group, group_name)
    membership = await session.get(Membership, (user.id, group.id))
    if membership is not None:
        await session.delete(membership)
    audit(session, actor, "user.leave", user_name, group=group_name)
    await session.commit()


async def set_group(session: AsyncSession, actor: str, name: str, *, permissions: list[str] | None = None,
                    priority: int | None = None, description: str | None = None) -> Group:
    group: Group = await one(session, Group, name)
    changed: dict[str, Any] = {}
    if permissions is not None:
        group.permissions = changed["permissions"] = permissions
    if priority is not None:
        group.priority = changed["priority"] = priority
    if description is not None:
        group.description = changed["description"] = _bounded(description, 1024, "description")
    session.add(group)
    audit(session, actor, "group.set", name, **changed)
    await session.commit()
    return group


async def remove_group(session: AsyncSession, actor: str, name: str) -> None:
    """Delete a group with its memberships, grants, presets and limits (its members stay)."""
    group: Group = await one(session, Group, name)
    for table in (Membership, Grant, AliasGrant, Preset):
        await session.exec(delete(table).where(col(table.group_id) == group.id))
    await session.exec(delete(RateLimit).where(col(RateLimit.scope) == LimitScope.GROUP,
                                               col(RateLimit.subject_id) == group.id))
    await session.delete(group)
    audit(session, actor, "group.remove", name)
    await session.commit()


async def revoke_grant(session: AsyncSession, actor: str, group_name: str, model_name: str) -> None:
    """A group may no longer use an LLM (or an alias granted alone)."""
    group: Group = await one(session, Group, group_name)
    llm = (await session.exec(select(LLM).where(LLM.name == model_name))).first()
    alias = (await session.exec(select(ModelAlias).where(ModelAlias.name == model_name))).first()
    if llm is None and alias is None:
        raise NotFound(f"No llm or alias named '{model_name}'.")
    row = (await session.get(Grant, (group.id, llm.id)) if llm is not None
           else await session.get(AliasGrant, (group.id, alias.id if alias else 0)))
    if row is not None:
        await session.delete(row)
    audit(session, actor, "group.revoke", group_name, llm=model_name)
    await session.commit()


async def set_llm(session: AsyncSession, actor: str, name: str, *, backend: str | None = None,
                  config: dict[str, Any] | None = None, max_queue: int | None = None,
                  fallbacks: list[str] | None = None, kind: str | None = None,
                  scale_to_zero: bool | None = None) -> LLM:
    """Change an LLM's backend and config (already validated together), queue bound, fallbacks, kind or
    whether its workers may scale to zero."""
    llm: LLM = await one(session, LLM, name)
    changed: dict[str, Any] = {}
    if scale_to_zero is not None:
        llm.scale_to_zero = changed["scale_to_zero"] = scale_to_zero
    if kind is not None:
        check_kind(kind)
        llm.kind = changed["kind"] = kind
    if backend is not None:
        llm.backend = changed["backend"] = backend
    if config is not None:
        llm.config = config
        changed["config"] = sorted(config)
    if max_queue is not None:
        if not 1 <= max_queue <= MAX_QUEUE:
            raise InvalidRequest(f"max_queue is between 1 and {MAX_QUEUE}.", param="max_queue")
        llm.max_queue = changed["max_queue"] = max_queue
    if fallbacks is not None:
        await check_fallbacks(session, name, fallbacks)
        llm.fallbacks = changed["fallbacks"] = fallbacks
    session.add(llm)
    audit(session, actor, "llm.set", name, **changed)
    await session.commit()
    return llm


async def set_price(session: AsyncSession, actor: str, name: str, *, input_price: float, output_price: float,
                    cached_input_price: float | None = None, deployment: str | None = None) -> LLM:
    """An LLM's prices per million tokens (or one of its further deployments'), from the next request on
    (requests already made keep the cost they were charged); audited with the prices they replace."""
    llm: LLM = await one(session, LLM, name)
    for param, price in (("input", input_price), ("output", output_price), ("cached_input", cached_input_price)):
        if price is not None and not 0 <= price <= MAX_PRICE:
            raise InvalidRequest(f"A price is from 0 to {MAX_PRICE:g} per million tokens.", param=param)
    if deployment is not None and deployment != DEFAULT_DEPLOYMENT:
        if deployment not in llm.deployments:
            raise NotFound(f"{name} has no deployment named '{deployment}'.", param="deployment")
        spec = llm.deployments[deployment]
        audit(session, actor, "llm.price", name, deployment=deployment, before=spec.get("price"),
              after={"input": input_price, "output": output_price})
        llm.deployments = {**llm.deployments, deployment: {**spec, "price": {"input": input_price,
                                                                             "output": output_price}}}
    else:
        audit(session, actor, "llm.price", name, before=[llm.input_price, llm.output_price,
                                                          llm.cached_input_price],
              after=[input_price, output_price, cached_input_price])
        llm.input_price, llm.output_price, llm.cached_input_price = input_price, output_price, cached_input_price
    session.add(llm)
    await session.commit()
    return llm


async def set_enabled(session: AsyncSession, actor: str, kind: type[LLM] | type[Preset], name: str,
                      enabled: bool) -> None:
    """Enable or disable an LLM (with its aliases and presets) or a preset: disabled, it is not served."""
    row: LLM | Preset = await one(session, kind, name)
    row.enabled = enabled
    session.add(row)
    audit(session, actor, f"{kind.__name__.lower()}.{'enable' if enabled else 'disable'}", name)
    await session.commit()


async def remove_limits(session: AsyncSession, actor: str, scope: LimitScope, name: str) -> None:
    await session.exec(delete(RateLimit).where(
        col(RateLimit.scope) == scope, col(RateLimit.subject_id) == await subject_id(session, scope, name)))
    audit(session, actor, "limits.remove", f"{scope.value}:{name}")
    await session.commit()

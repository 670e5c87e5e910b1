"""Changes to users, groups, grants, LLMs and tokens, each written with an audit entry; shared by the
CLI (and the admin app). Callers announce the change to the gateways after it commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pwdlib import PasswordHash
from sqlalchemy import ColumnElement
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.db.secrets import NewToken, new_token
from modelport.db.tables import (
    LLM,
    ApiToken,
    AuditEntry,
    Grant,
    Group,
    LimitScope,
    Membership,
    RateLimit,
    User,
    utcnow,
)
from modelport.protocol import keys
from modelport.protocol.errors import InvalidRequest, NotFound

PASSWORDS = PasswordHash.recommended()


def _audit(session: AsyncSession, actor: str, action: str, target: str, **detail: Any) -> None:
    session.add(AuditEntry(actor=actor, action=action, target=target, detail=detail))


async def _one(session: AsyncSession, kind: type[User] | type[Group] | type[LLM], name: str) -> Any:
    found = (await session.exec(select(kind).where(kind.name == name))).first()
    if found is None:
        raise NotFound(f"No {kind.__name__.lower()} named '{name}'.")
    return found


async def _require_new(session: AsyncSession, kind: type[User] | type[Group] | type[LLM], name: str) -> None:
    if (await session.exec(select(kind).where(kind.name == name))).first() is not None:
        raise InvalidRequest(f"A {kind.__name__.lower()} named '{name}' already exists.")


async def add_user(session: AsyncSession, actor: str, name: str, *, admin: bool = False,
                   password: str | None = None) -> User:
    await _require_new(session, User, name)
    user = User(name=name, display_name=name, is_admin=admin,
                password_hash=PASSWORDS.hash(password) if password else None)
    session.add(user)
    _audit(session, actor, "user.add", name, admin=admin)
    await session.commit()
    return user


async def add_group(session: AsyncSession, actor: str, name: str, permissions: list[str] | None = None,
                    priority: int = 0) -> Group:
    await _require_new(session, Group, name)
    group = Group(name=name, permissions=permissions or [], priority=priority)
    session.add(group)
    _audit(session, actor, "group.add", name)
    await session.commit()
    return group


async def join(session: AsyncSession, actor: str, user_name: str, group_name: str) -> None:
    user: User = await _one(session, User, user_name)
    group: Group = await _one(session, Group, group_name)
    assert user.id is not None and group.id is not None
    if await session.get(Membership, (user.id, group.id)) is None:
        session.add(Membership(user_id=user.id, group_id=group.id))
    _audit(session, actor, "user.join", user_name, group=group_name)
    await session.commit()


async def grant(session: AsyncSession, actor: str, group_name: str, llm_name: str) -> None:
    group: Group = await _one(session, Group, group_name)
    llm: LLM = await _one(session, LLM, llm_name)
    assert group.id is not None and llm.id is not None
    if await session.get(Grant, (group.id, llm.id)) is None:
        session.add(Grant(group_id=group.id, llm_id=llm.id))
    _audit(session, actor, "group.grant", group_name, llm=llm_name)
    await session.commit()


async def add_llm(session: AsyncSession, actor: str, name: str, backend: str, config: dict[str, Any], *,
                  max_queue: int = 256) -> LLM:
    """Register a model; ``config`` must already be validated for its backend."""
    if not keys.MODEL_NAME_PATTERN.match(name):
        raise InvalidRequest("Model names use letters, digits and . _ : / @ + - (at most 128).", param="name")
    await _require_new(session, LLM, name)
    llm = LLM(name=name, backend=backend, config=config, max_queue=max_queue)
    session.add(llm)
    _audit(session, actor, "llm.add", name, backend=backend)
    await session.commit()
    return llm


async def create_token(session: AsyncSession, actor: str, user_name: str, *, name: str = "",
                       expires_at: datetime | None = None) -> NewToken:
    user: User = await _one(session, User, user_name)
    assert user.id is not None
    token = new_token()
    session.add(ApiToken(user_id=user.id, name=name, prefix=token.prefix, secret_hash=token.secret_hash,
                         expires_at=expires_at))
    _audit(session, actor, "token.create", user_name, prefix=token.prefix, name=name)
    await session.commit()
    return token


async def revoke_token(session: AsyncSession, actor: str, prefix: str, *, exact: bool = False) -> ApiToken:
    """Revoke the one token whose prefix starts with ``prefix`` (is ``prefix``, when ``exact``)."""
    tokens = (await session.exec(select(ApiToken).where(_prefix_matches(prefix, exact)))).all()
    if not tokens:
        raise NotFound(f"No token starts with '{prefix}'.")
    if len(tokens) > 1:
        raise InvalidRequest(f"'{prefix}' matches {len(tokens)} tokens; give more of the prefix.")
    token = tokens[0]
    token.revoked_at = token.revoked_at or utcnow()
    session.add(token)
    _audit(session, actor, "token.revoke", token.prefix)
    await session.commit()
    return token


async def set_limits(session: AsyncSession, actor: str, scope: LimitScope, name: str,
                     values: dict[str, int]) -> RateLimit:
    """Set (or with all zeros, lift) the limits of a token (by prefix), a user or a group."""
    subject_id = await _subject_id(session, scope, name)
    limit = (await session.exec(select(RateLimit).where(RateLimit.scope == scope,
                                                        RateLimit.subject_id == subject_id))).first()
    limit = limit or RateLimit(scope=scope, subject_id=subject_id)
    for field, value in values.items():
        if value < 0:
            raise InvalidRequest(f"Limits are zero (unlimited) or positive, not {value}.", param=field)
        setattr(limit, field, value)
    session.add(limit)
    _audit(session, actor, "limits.set", f"{scope.value}:{name}", **values)
    await session.commit()
    return limit


async def _subject_id(session: AsyncSession, scope: LimitScope, name: str) -> int:
    if scope is LimitScope.TOKEN:
        tokens = (await session.exec(select(ApiToken).where(_prefix_matches(name, exact=False)))).all()
        if len(tokens) != 1:
            raise NotFound(f"'{name}' matches {len(tokens)} tokens; give one token's prefix.")
        found: ApiToken | User | Group = tokens[0]
    else:
        found = await _one(session, User if scope is LimitScope.USER else Group, name)
    assert found.id is not None
    return found.id


def _prefix_matches(prefix: str, exact: bool) -> ColumnElement[bool]:
    """Tokens whose prefix is, or starts with, ``prefix`` taken literally (``_`` and ``%`` are not wildcards)."""
    column = col(ApiToken.prefix)
    return column == prefix if exact else column.startswith(prefix, autoescape=True)

"""Every change to users, groups, grants, LLMs and tokens, each written with its audit entry (the only
writer of audit rows), for the CLI and the admin app. Callers announce the change after it commits."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pwdlib import PasswordHash
from sqlalchemy import ColumnElement
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.db.queries import deactivated_by_directory
from modelport.db.secrets import NewToken, new_token
from modelport.db.tables import (
    LLM,
    LLM_KINDS,
    AliasGrant,
    ApiToken,
    AuditEntry,
    Grant,
    Group,
    LimitScope,
    Membership,
    ModelAlias,
    Preset,
    RateLimit,
    User,
    UserSource,
    utcnow,
)
from modelport.protocol import keys
from modelport.protocol.errors import InvalidRequest, NotFound

PASSWORDS = PasswordHash.recommended()
MAX_LIMIT = 1e15
ACCOUNT_NAME = re.compile(r"^[\w.@+-]{1,128}$")


def audit(session: AsyncSession, actor: str, action: str, target: str, **detail: Any) -> None:
    """Add the audit entry of a change to the session (committed with it)."""
    session.add(AuditEntry(actor=actor, action=action, target=target, detail=detail))


async def record(session: AsyncSession, actor: str, action: str, target: str) -> None:
    """Audit a change the admin app's generic views have already committed."""
    audit(session, actor, action, target)
    await session.commit()


async def one(session: AsyncSession, kind: type[User] | type[Group] | type[LLM] | type[Preset], name: str) -> Any:
    """The row of this kind with this name, or a 404 naming it."""
    found = (await session.exec(select(kind).where(kind.name == name))).first()
    if found is None:
        raise NotFound(f"No {kind.__name__.lower()} named '{name}'.")
    return found


async def exists(session: AsyncSession, kind: type[User] | type[Group] | type[LLM] | type[Preset] | type[ModelAlias],
                 name: str) -> bool:
    return (await session.exec(select(kind.id).where(kind.name == name))).first() is not None


async def _require_new(session: AsyncSession, kind: type[User] | type[Group], name: str) -> None:
    if not ACCOUNT_NAME.fullmatch(name):
        raise InvalidRequest(f"A {kind.__name__.lower()} name is 1 to 128 letters, digits and . _ @ + -.",
                             param="name")
    if await exists(session, kind, name):
        raise InvalidRequest(f"A {kind.__name__.lower()} named '{name}' already exists.")


async def require_new_model_name(session: AsyncSession, name: str) -> None:
    """LLMs, aliases and presets share one namespace (a request names any of them as its model)."""
    if not keys.MODEL_NAME_PATTERN.match(name):
        raise InvalidRequest("Model names use letters, digits and . _ : / @ + - (at most 128).", param="name")
    for kind in (LLM, ModelAlias, Preset):
        if await exists(session, kind, name):
            raise InvalidRequest(f"The model name '{name}' is taken (by an LLM, an alias or a preset).",
                                 param="name")


async def add_user(session: AsyncSession, actor: str, name: str, *, admin: bool = False,
                   password: str | None = None, display_name: str = "", email: str | None = None) -> User:
    await _require_new(session, User, name)
    if len(display_name) > 256 or len(email or "") > 256:
        raise InvalidRequest("A display name or email has at most 256 characters.", param="display_name")
    user = User(name=name, display_name=display_name or name, email=email or None, is_admin=admin,
                password_hash=PASSWORDS.hash(password) if password else None)
    session.add(user)
    audit(session, actor, "user.add", name, admin=admin)
    await session.commit()
    return user


async def add_group(session: AsyncSession, actor: str, name: str, permissions: list[str] | None = None,
                    priority: int = 0) -> Group:
    await _require_new(session, Group, name)
    group = Group(name=name, permissions=permissions or [], priority=priority)
    session.add(group)
    audit(session, actor, "group.add", name)
    await session.commit()
    return group


async def join(session: AsyncSession, actor: str, user_name: str, group_name: str) -> None:
    user: User = await one(session, User, user_name)
    group: Group = await one(session, Group, group_name)
    assert user.id is not None and group.id is not None
    if await session.get(Membership, (user.id, group.id)) is None:
        session.add(Membership(user_id=user.id, group_id=group.id))
    audit(session, actor, "user.join", user_name, group=group_name)
    await session.commit()


async def grant(session: AsyncSession, actor: str, group_name: str, model_name: str) -> None:
    """Let a group use an LLM (with its aliases and presets), or an alias alone."""
    group: Group = await one(session, Group, group_name)
    llm = (await session.exec(select(LLM).where(LLM.name == model_name))).first()
    alias = (await session.exec(select(ModelAlias).where(ModelAlias.name == model_name))).first()
    assert group.id is not None
    if llm is not None:
        assert llm.id is not None
        if await session.get(Grant, (group.id, llm.id)) is None:
            session.add(Grant(group_id=group.id, llm_id=llm.id))
    elif alias is not None:
        assert alias.id is not None
        if await session.get(AliasGrant, (group.id, alias.id)) is None:
            session.add(AliasGrant(group_id=group.id, alias_id=alias.id))
    else:
        raise NotFound(f"No llm or alias named '{model_name}'.")
    audit(session, actor, "group.grant", group_name, llm=model_name)
    await session.commit()


async def add_llm(session: AsyncSession, actor: str, name: str, backend: str, config: dict[str, Any], *,
                  max_queue: int = 256, enabled: bool = True, kind: str = "chat", scale_to_zero: bool = False) -> LLM:
    """Register a model; ``config`` must already be validated for its backend."""
    await require_new_model_name(session, name)
    check_kind(kind)
    llm = LLM(name=name, backend=backend, config=config, max_queue=max_queue, enabled=enabled, kind=kind,
              scale_to_zero=scale_to_zero)
    session.add(llm)
    audit(session, actor, "llm.add", name, backend=backend, kind=kind)
    await session.commit()
    return llm


def check_kind(kind: str) -> None:
    if kind not in LLM_KINDS:
        raise InvalidRequest(f"An LLM's kind is {' or '.join(LLM_KINDS)}, not '{kind}'.", param="kind")


async def create_token(session: AsyncSession, actor: str, user_name: str, *, name: str = "",
                       expires_at: datetime | None = None) -> NewToken:
    user: User = await one(session, User, user_name)
    assert user.id is not None
    token = new_token()
    session.add(ApiToken(user_id=user.id, name=name, prefix=token.prefix, secret_hash=token.secret_hash,
                         expires_at=expires_at))
    audit(session, actor, "token.create", user_name, prefix=token.prefix, name=name)
    await session.commit()
    return token


async def revoke_token(session: AsyncSession, actor: str, prefix: str, *, exact: bool = False) -> ApiToken:
    """Revoke the one token whose prefix starts with ``prefix`` (is ``prefix``, when ``exact``)."""
    tokens = (await session.exec(select(ApiToken).where(prefix_matches(prefix, exact)))).all()
    if not tokens:
        raise NotFound(f"No token starts with '{prefix}'.")
    if len(tokens) > 1:
        raise InvalidRequest(f"'{prefix}' matches {len(tokens)} tokens; give more of the prefix.")
    token = tokens[0]
    token.revoked_at = token.revoked_at or utcnow()
    session.add(token)
    audit(session, actor, "token.revoke", token.prefix)
    await session.commit()
    return token


async def set_limits(session: AsyncSession, actor: str, scope: LimitScope, name: str,
                     values: dict[str, float]) -> RateLimit:
    """Set (or with all zeros, lift) the limits and budgets of a token (by prefix), a user or a group."""
    subject = await subject_id(session, scope, name)
    limit = (await session.exec(select(RateLimit).where(RateLimit.scope == scope,
                                                        RateLimit.subject_id == subject))).first()
    limit = limit or RateLimit(scope=scope, subject_id=subject)
    for field, value in values.items():
        if not 0 <= value <= MAX_LIMIT:
            raise InvalidRequest(f"Limits are zero (unlimited) or positive up to {MAX_LIMIT:g}, not {value:g}.",
                                 param=field)
        setattr(limit, field, value)
    session.add(limit)
    audit(session, actor, "limits.set", f"{scope.value}:{name}", **values)
    await session.commit()
    return limit


async def subject_id(session: AsyncSession, scope: LimitScope, name: str) -> int:
    if scope is LimitScope.TOKEN:
        tokens = (await session.exec(select(ApiToken).where(prefix_matches(name, exact=False)))).all()
        if len(tokens) != 1:
            raise NotFound(f"'{name}' matches {len(tokens)} tokens; give one token's prefix.")
        found: ApiToken | User | Group = tokens[0]
    else:
        found = await one(session, User if scope is LimitScope.USER else Group, name)
    assert found.id is not None
    return found.id


def prefix_matches(prefix: str, exact: bool) -> ColumnElement[bool]:
    """Tokens whose prefix is, or starts with, ``prefix`` taken literally (``_`` and ``%`` are not wildcards)."""
    column = col(ApiToken.prefix)
    return column == prefix if exact else column.startswith(prefix, autoescape=True)


async def sign_out(session: AsyncSession, actor: str, users: Sequence[User]) -> None:
    """End every admin session of these users (their session version moves on)."""
    for user in users:
        user.session_version += 1
        session.add(user)
        audit(session, actor, "user.sign_out", user.name)
    await session.commit()


async def record_login(session: AsyncSession, user: User) -> None:
    audit(session, user.name, "login", user.source.value)
    await session.commit()


async def deactivate_user(session: AsyncSession, actor: str, user: User) -> None:
    user.active = False
    session.add(user)
    audit(session, actor, "user.deactivate", user.name)
    await session.commit()


async def sync_directory_user(session: AsyncSession, name: str, display_name: str, email: str | None,
                              user: User | None, mapped_groups: set[str], wanted: set[str]) -> tuple[User, bool]:
    """Create or refresh the local copy of an LDAP user and its memberships of the ``mapped_groups``
    (member of those ``wanted``); a user the directory had deactivated (and no administrator changed
    since) is active again. Returns the user and whether their memberships changed."""
    if user is not None and not user.active and await deactivated_by_directory(session, user.name):
        user.active = True
        audit(session, "ldap", "user.reactivate", user.name)
    user = user or User(name=name, source=UserSource.LDAP)
    user.display_name, user.email = display_name, email
    session.add(user)
    await session.flush()
    groups = (await session.exec(select(Group).where(col(Group.name).in_(mapped_groups)))).all()
    changed = False
    for group in groups:
        assert group.id is not None and user.id is not None
        member = await session.get(Membership, (user.id, group.id))
        if group.name in wanted and member is None:
            session.add(Membership(user_id=user.id, group_id=group.id))
            changed = True
        elif group.name not in wanted and member is not None:
            await session.delete(member)
            changed = True
    await session.commit()
    return user, changed

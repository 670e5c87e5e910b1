"""What the admin app's pages read: a user's tokens, groups, presets and usage, recent usage, names of rows by id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, inspect
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.db.tables import LLM, ApiToken, Group, LimitScope, Membership, Preset, UsageRecord, User


async def group_permissions(session: AsyncSession, user_id: int) -> set[str]:
    """Every permission any of the user's groups holds."""
    groups = await session.exec(select(Group).join(Membership, col(Membership.group_id) == col(Group.id))
                                .where(Membership.user_id == user_id))
    return {permission for group in groups.all() for permission in group.permissions}


async def may(session: AsyncSession, user: User, permission: str) -> bool:
    """Administrators may everything; others, what one of their groups holds."""
    return user.is_admin or permission in await group_permissions(session, user.id or 0)


async def tokens_of(session: AsyncSession, user_id: int) -> list[ApiToken]:
    """The user's tokens, newest first."""
    return list((await session.exec(select(ApiToken).where(ApiToken.user_id == user_id)
                                    .order_by(col(ApiToken.id).desc()))).all())


async def token(session: AsyncSession, token_id: int) -> ApiToken | None:
    return await session.get(ApiToken, token_id)


async def stored_password_hash(session: AsyncSession, user_id: int | None) -> str | None:
    user = await session.get(User, user_id) if user_id is not None else None
    return user.password_hash if user is not None else None


async def presets_owned(session: AsyncSession, user_id: int) -> list[tuple[Preset, str]]:
    """The user's own presets with the names of their LLMs, by name."""
    rows = await session.exec(select(Preset, LLM.name).join(LLM, col(LLM.id) == col(Preset.llm_id))
                              .where(Preset.owner_id == user_id).order_by(col(Preset.name)))
    return list(rows.all())


async def preset(session: AsyncSession, preset_id: int) -> Preset | None:
    return await session.get(Preset, preset_id)


async def name_of(session: AsyncSession, table: type[Any], row_id: int) -> str | None:
    """The ``name`` of a users, groups or LLMs row, if it exists."""
    row = await session.get(table, row_id)
    return str(row.name) if row is not None else None


def loaded_name(row: Any, relation: str) -> str | None:
    """The ``name`` of a row's related row when it was loaded with it (a lazy load cannot run in an async
    session); None when it was not."""
    return None if relation in inspect(row).unloaded else str(getattr(row, relation).name)


async def usage_since(session: AsyncSession, since: datetime) -> tuple[list[UsageRecord], dict[int, str]]:
    """Usage records from ``since`` on, oldest first, and user names by id."""
    records = list((await session.exec(select(UsageRecord).where(col(UsageRecord.created_at) >= since)
                                       .order_by(col(UsageRecord.created_at)))).all())
    users = (await session.exec(select(User))).all()
    return records, {user.id or 0: user.name for user in users}


async def group_names(session: AsyncSession) -> list[str]:
    return list((await session.exec(select(Group.name).order_by(col(Group.name)))).all())


async def llm_named(session: AsyncSession, name: str) -> LLM | None:
    return (await session.exec(select(LLM).where(LLM.name == name))).first()


async def limit_subject(session: AsyncSession, scope: LimitScope, subject_id: int) -> str:
    """What a limit applies to, by name: a token's prefix, a user's or a group's name."""
    if scope is LimitScope.TOKEN:
        token = await session.get(ApiToken, subject_id)
        return f"token {token.prefix}…" if token is not None else f"token #{subject_id} (gone)"
    table = User if scope is LimitScope.USER else Group
    name = await name_of(session, table, subject_id)
    return f"{scope.value} {name}" if name is not None else f"{scope.value} #{subject_id} (gone)"


async def has_users(session: AsyncSession) -> bool:
    return (await session.exec(select(User.id).limit(1))).first() is not None


async def usage_of(session: AsyncSession, user_id: int, since: datetime, recent: int = 50
                   ) -> tuple[list[UsageRecord], list[tuple[str, int, int, int, float]]]:
    """One user's latest ``recent`` requests since ``since``, newest first, and per model their requests,
    prompt and completion tokens and cost since then."""
    mine = col(UsageRecord.user_id) == user_id
    after = col(UsageRecord.created_at) >= since
    rows = list((await session.exec(select(UsageRecord).where(mine, after)
                                    .order_by(col(UsageRecord.id).desc()).limit(recent))).all())
    totals = await session.exec(select(  # type: ignore[call-overload]
        UsageRecord.model, func.count(), func.sum(UsageRecord.prompt_tokens), func.sum(UsageRecord.completion_tokens),
        func.sum(UsageRecord.cost)).where(mine, after).group_by(col(UsageRecord.model))
        .order_by(col(UsageRecord.model)))
    return rows, [(model, int(count), int(prompt or 0), int(completion or 0), float(cost or 0))
                  for model, count, prompt, completion, cost in totals.all()]

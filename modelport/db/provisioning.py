"""Bulk creation of users with their group memberships, all or nothing, safe to re-run."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.db.directory import ACCOUNT_NAME, PASSWORDS, audit
from modelport.db.tables import Group, Membership, User
from modelport.protocol.errors import InvalidRequest


@dataclass(frozen=True)
class NewUser:
    line: int  # where it came from, for error messages
    name: str
    display_name: str = ""
    email: str | None = None
    admin: bool = False
    groups: tuple[str, ...] = ()
    password: str | None = None


@dataclass(frozen=True)
class Imported:
    created: int
    existing: int
    memberships: int


async def import_users(session: AsyncSession, actor: str, rows: list[NewUser]) -> Imported:
    """Create the users that do not exist and add every listed membership that is missing; users that exist are
    otherwise left as they are. Every named group must exist. One transaction: an error writes nothing."""
    _check_names(rows)
    groups = await _groups_named(session, rows)
    names = [row.name for row in rows]
    users = {user.name: user for user in (await session.exec(select(User).where(col(User.name).in_(names)))).all()}
    created = 0
    for row in rows:
        if row.name not in users:
            users[row.name] = User(name=row.name, display_name=row.display_name or row.name, email=row.email,
                                   is_admin=row.admin,
                                   password_hash=PASSWORDS.hash(row.password) if row.password else None)
            session.add(users[row.name])
            audit(session, actor, "user.add", row.name, admin=row.admin, imported=True)
            created += 1
    await session.flush()
    joined = await _join(session, actor, rows, users, groups)
    await session.commit()
    return Imported(created=created, existing=len(rows) - created, memberships=joined)


def _check_names(rows: list[NewUser]) -> None:
    seen: set[str] = set()
    for row in rows:
        if not ACCOUNT_NAME.fullmatch(row.name):
            raise InvalidRequest(f"line {row.line}: '{row.name}' is not a user name (1 to 128 letters, digits "
                                 "and . _ @ + -).", param="name")
        if row.name in seen:
            raise InvalidRequest(f"line {row.line}: '{row.name}' appears more than once.", param="name")
        seen.add(row.name)


async def _groups_named(session: AsyncSession, rows: list[NewUser]) -> dict[str, Group]:
    wanted = {group for row in rows for group in row.groups}
    groups = {group.name: group for group in (await session.exec(select(Group).where(col(Group.name).in_(wanted))))}
    for row in rows:
        missing = [group for group in row.groups if group not in groups]
        if missing:
            raise InvalidRequest(f"line {row.line}: no group named '{missing[0]}' (create it first).",
                                 param="groups")
    return groups


async def _join(session: AsyncSession, actor: str, rows: list[NewUser], users: dict[str, User],
                groups: dict[str, Group]) -> int:
    """Add the memberships the rows list that are missing; returns how many."""
    member_of = {(user_id, group_id) for user_id, group_id in (await session.exec(
        select(Membership.user_id, Membership.group_id).where(
            col(Membership.user_id).in_([user.id for user in users.values()])))).all()}
    joined = 0
    for row in rows:
        user = users[row.name]
        for group_name in row.groups:
            group = groups[group_name]
            assert user.id is not None and group.id is not None
            if (user.id, group.id) not in member_of:
                session.add(Membership(user_id=user.id, group_id=group.id))
                member_of.add((user.id, group.id))
                audit(session, actor, "user.join", row.name, group=group_name)
                joined += 1
    return joined

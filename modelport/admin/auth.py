"""Admin login: local argon2 passwords or LDAP, throttled against guessing; the session is signed, expires,
and is bound to the user's session version (a password change or "sign out everywhere" ends it). LDAP
users are created locally on first login and their mapped groups kept in step."""

from __future__ import annotations

import asyncio
import functools
import logging

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette_admin.auth import AdminUser, AuthProvider
from starlette_admin.exceptions import LoginFailed

from modelport.admin.ldap_directory import (
    DirectoryUnreachable,
    DirectoryUser,
    check_password,
    dropped_from_directory,
)
from modelport.admin.services import AdminServices
from modelport.db import queries
from modelport.db.directory import PASSWORDS
from modelport.db.tables import AuditEntry, Group, Membership, User, UserSource

log = logging.getLogger(__name__)
REFUSED = "Invalid user name or password."
MAX_NAME = 128
MAX_PASSWORD = 1024


@functools.cache
def _dummy_hash() -> str:
    """A hash to check wrong names against, so unknown users take as long to refuse as known ones."""
    return PASSWORDS.hash("not a password anyone has")


class ModelPortAuth(AuthProvider):
    async def login(self, username: str, password: str, remember_me: bool, request: Request) -> Response | None:
        services: AdminServices = request.state.services
        client = request.client.host if request.client else "unknown"
        username = username.strip()
        if not await services.login_attempt(username, client):
            raise LoginFailed("Too many failed attempts; try again later.")
        if not username or len(username) > MAX_NAME or len(password) > MAX_PASSWORD:
            raise LoginFailed(REFUSED)
        async with services.sessions() as session:
            user = await queries.user_named(session, username)
            if user is None and services.settings.ldap_url:
                user = await queries.user_named(session, username.casefold())
            if user is None or user.source is UserSource.LDAP:
                user = await self._ldap_login(services, session, username.casefold(), password, user)
            elif not PASSWORDS.verify(password, user.password_hash or _dummy_hash()) or not user.password_hash:
                user = None
            if user is None or not user.active or user.deleted_at is not None:
                raise LoginFailed(REFUSED)
            session.add(AuditEntry(actor=user.name, action="login", target=user.source.value))
            await session.commit()
            request.session.update({"user": user.name, "version": user.session_version})
        await services.login_succeeded(username, client)
        return None

    async def _ldap_login(self, services: AdminServices, session: AsyncSession, username: str, password: str,
                          user: User | None) -> User | None:
        if not services.settings.ldap_url:
            PASSWORDS.verify(password, _dummy_hash())
            return None
        try:
            found = await asyncio.to_thread(check_password, services.settings, username, password)
            if found is None:
                if user is not None and user.active and await asyncio.to_thread(
                        dropped_from_directory, services.settings, username):
                    await _deactivate(services, session, user)
                return None
        except DirectoryUnreachable:
            log.warning("LDAP directory unreachable during a login")
            raise LoginFailed("The directory (LDAP) is unreachable right now; local accounts still work.") from None
        return await _sync_ldap_user(services, session, username, found, user)

    async def authenticate(self, request: Request) -> AdminUser | None:
        name = request.session.get("user")
        if not name:
            return None
        async with request.state.services.sessions() as session:
            user = await queries.user_named(session, name)
        if user is None or not user.active or user.deleted_at is not None or \
                request.session.get("version") != user.session_version:
            request.session.clear()
            return None
        request.state.user = user
        return AdminUser(username=user.display_name or user.name)

    async def logout(self, request: Request) -> Response | None:
        request.session.clear()
        return None


async def _deactivate(services: AdminServices, session: AsyncSession, user: User) -> None:
    """The directory definitely no longer has them: so neither do we, on every gateway at once."""
    user.active = False
    session.add(user)
    session.add(AuditEntry(actor="ldap", action="user.deactivate", target=user.name))
    await session.commit()
    await services.announce("user.deactivate")


async def _sync_ldap_user(services: AdminServices, session: AsyncSession, username: str, found: DirectoryUser,
                          user: User | None) -> User:
    """Create or refresh the local copy of a directory user and its memberships of mapped groups; a user
    the directory had deactivated (and no administrator changed since) is active again."""
    if user is not None and not user.active and await queries.deactivated_by_directory(session, user.name):
        user.active = True
        session.add(AuditEntry(actor="ldap", action="user.reactivate", target=user.name))
    user = user or User(name=username, source=UserSource.LDAP)
    user.display_name, user.email = found.display_name, found.email
    session.add(user)
    await session.flush()
    mapping = services.settings.ldap_group_map
    wanted = {mapping[group] for group in found.groups if group in mapping}
    groups = (await session.exec(select(Group).where(col(Group.name).in_(set(mapping.values()))))).all()
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
    if changed:
        await services.announce("user.groups")
    return user

"""Admin login: local argon2 passwords or LDAP, throttled against guessing; the session is signed and
expires. LDAP users are created locally on first login and their mapped groups kept in step."""

from __future__ import annotations

import asyncio
import logging

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette_admin.auth import AdminUser, AuthProvider
from starlette_admin.exceptions import LoginFailed

from modelport.admin.ldap_directory import DirectoryUnreachable, DirectoryUser, check_password, still_listed
from modelport.admin.services import AdminServices
from modelport.db.directory import PASSWORDS
from modelport.db.tables import AuditEntry, Group, Membership, User, UserSource

log = logging.getLogger(__name__)
REFUSED = "Invalid user name or password."


class ModelPortAuth(AuthProvider):
    async def login(self, username: str, password: str, remember_me: bool, request: Request) -> Response | None:
        services: AdminServices = request.state.services
        client = request.client.host if request.client else "unknown"
        if await services.login_refused(username, client):
            raise LoginFailed("Too many failed attempts; try again later.")
        async with services.sessions() as session:
            user = (await session.exec(select(User).where(User.name == username))).first()
            if user is None or user.source is UserSource.LDAP:
                user = await self._ldap_login(services, session, username, password, user)
            elif not (user.password_hash and PASSWORDS.verify(password, user.password_hash)):
                user = None
            if user is None or not user.active or user.deleted_at is not None:
                await services.login_failed(username, client)
                raise LoginFailed(REFUSED)
            session.add(AuditEntry(actor=username, action="login", target=user.source.value))
            await session.commit()
        request.session.update({"user": username})
        return None

    async def _ldap_login(self, services: AdminServices, session: AsyncSession, username: str, password: str,
                          user: User | None) -> User | None:
        if not services.settings.ldap_url:
            return None
        try:
            found = await asyncio.to_thread(check_password, services.settings, username, password)
        except DirectoryUnreachable:
            log.warning("LDAP directory unreachable during a login")
            raise LoginFailed("The directory (LDAP) is unreachable right now; local accounts still work.") from None
        if found is None:
            if user is not None and user.active and not await asyncio.to_thread(still_listed, services.settings,
                                                                                username):
                user.active = False  # the directory no longer has them: so neither do we
                session.add(user)
                session.add(AuditEntry(actor="ldap", action="user.deactivate", target=username))
                await session.commit()
            return None
        return await _sync_ldap_user(services, session, username, found, user)

    async def authenticate(self, request: Request) -> AdminUser | None:
        name = request.session.get("user")
        if not name:
            return None
        async with request.state.services.sessions() as session:
            user = (await session.exec(select(User).where(User.name == name))).first()
        if user is None or not user.active or user.deleted_at is not None:
            request.session.clear()
            return None
        request.state.user = user
        return AdminUser(username=user.display_name or user.name)

    async def logout(self, request: Request) -> Response | None:
        request.session.clear()
        return None


async def _sync_ldap_user(services: AdminServices, session: AsyncSession, username: str, found: DirectoryUser,
                          user: User | None) -> User:
    """Create or refresh the local copy of a directory user, and its memberships of mapped groups."""
    user = user or User(name=username, source=UserSource.LDAP)
    user.display_name, user.email = found.display_name, found.email
    session.add(user)
    await session.flush()
    mapping = services.settings.ldap_group_map
    wanted = {mapping[group] for group in found.groups if group in mapping}
    groups = (await session.exec(select(Group).where(col(Group.name).in_(set(mapping.values()))))).all()
    for group in groups:
        assert group.id is not None and user.id is not None
        member = await session.get(Membership, (user.id, group.id))
        if group.name in wanted and member is None:
            session.add(Membership(user_id=user.id, group_id=group.id))
        elif group.name not in wanted and member is not None:
            await session.delete(member)
    await session.commit()
    return user

"""Admin login: local argon2 passwords or LDAP, throttled against guessing; the session is signed, expires,
and is bound to the user's session version (a password change or "sign out everywhere" ends it). LDAP
users are created locally on first login and their mapped groups kept in step."""

from __future__ import annotations

import asyncio
import functools
import logging

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
from modelport.admin.playground import end_session_token
from modelport.admin.services import AdminServices
from modelport.db import directory, queries
from modelport.db.directory import PASSWORDS
from modelport.db.tables import User, UserSource

log = logging.getLogger(__name__)
REFUSED = "Invalid user name or password."
MAX_NAME = 128
MAX_PASSWORD = 1024


@functools.cache
def _dummy_hash() -> str:
    """A hash to check wrong names against, so unknown users take as long to refuse as known ones."""
    return PASSWORDS.hash("not a password anyone has")


def is_administrator(request: Request) -> bool:
    """Whether the signed-in user (if any) administers ModelPort: the check of every administrators' page."""
    user: User | None = getattr(request.state, "user", None)
    return user is not None and user.is_admin


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
            await directory.record_login(session, user)
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
        await end_session_token(request)
        request.session.clear()
        return None


async def _deactivate(services: AdminServices, session: AsyncSession, user: User) -> None:
    """The directory definitely no longer has them: so neither do we, on every gateway at once."""
    await directory.deactivate_user(session, "ldap", user)
    await services.announce("user.deactivate")


async def _sync_ldap_user(services: AdminServices, session: AsyncSession, username: str, found: DirectoryUser,
                          user: User | None) -> User:
    """Keep the local copy of a directory user, and its memberships of mapped groups, in step."""
    mapping = services.settings.ldap_group_map
    user, changed = await directory.sync_directory_user(
        session, username, found.display_name, found.email, user, set(mapping.values()),
        {mapping[group] for group in found.groups if group in mapping})
    if changed:
        await services.announce("user.groups")
    return user

"""Password checks against an LDAP directory (ldap3): bind as the user, read their groups. Every value
put into a DN or a filter is escaped."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import ldap3
from ldap3.abstract.entry import Entry
from ldap3.core.exceptions import LDAPBindError, LDAPException, LDAPInvalidCredentialsResult
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from modelport.admin.settings import AdminSettings

NO_SUCH_OBJECT = 32  # LDAP result code: the DN names no entry


class DirectoryUnreachable(Exception):
    """The LDAP server did not answer; local accounts still work."""


@dataclass(frozen=True)
class DirectoryUser:
    dn: str
    display_name: str
    email: str | None
    groups: frozenset[str]


def check_password(settings: AdminSettings, username: str, password: str) -> DirectoryUser | None:
    """The user if the directory accepts the password, None if it refuses it (blocking: run in a thread)."""
    if not password:
        return None
    dn = settings.ldap_user_dn_template.format(username=escape_rdn(username))
    connection = _connection(settings, dn, password)
    try:
        try:
            connection.bind()
        except (LDAPBindError, LDAPInvalidCredentialsResult):
            return None
        connection.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["cn", "mail"])
        entry = connection.entries[0] if connection.entries else None
        group_filter = settings.ldap_group_filter.format(user_dn=escape_filter_chars(dn))
        connection.search(settings.ldap_group_base, group_filter, attributes=["cn"])
        groups = frozenset(str(group.cn) for group in connection.entries)
    except LDAPException as exc:
        raise DirectoryUnreachable(str(exc)) from exc
    finally:
        _close(connection)
    display = _first(entry, "cn") or username
    email = _first(entry, "mail")
    return DirectoryUser(dn=dn, display_name=display, email=email, groups=groups)


def _first(entry: Entry | None, attribute: str) -> str | None:
    """The first value of an entry's attribute, if it has one."""
    if entry is None or attribute not in entry or not entry[attribute].values:
        return None
    return str(entry[attribute].values[0])


def dropped_from_directory(settings: AdminSettings, username: str) -> bool:
    """True only when the directory definitely has no entry for the user: a base search of their DN, bound
    with the service account (MODELPORT_LDAP_BIND_DN), answered "no such object". Without a service
    account, or on any other answer (an entry hidden from us, a refusal, an error), the answer is False:
    a wrong password must never be able to deactivate anyone."""
    if not settings.ldap_bind_dn or settings.ldap_bind_password is None:
        return False
    dn = settings.ldap_user_dn_template.format(username=escape_rdn(username))
    connection = _connection(settings, settings.ldap_bind_dn, settings.ldap_bind_password.get_secret_value(),
                             raise_exceptions=False)  # "no such object" is an answer here, not an error
    try:
        if not connection.bind():
            raise DirectoryUnreachable(f"the service account's bind was refused: {connection.result}")
        connection.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=[])
        result = int(connection.result.get("result", -1))
    except LDAPException as exc:
        raise DirectoryUnreachable(str(exc)) from exc
    finally:
        _close(connection)
    return result == NO_SUCH_OBJECT


def _connection(settings: AdminSettings, user: str, password: str, *,
                raise_exceptions: bool = True) -> ldap3.Connection:
    server = ldap3.Server(settings.ldap_url, connect_timeout=settings.ldap_timeout_s)
    return ldap3.Connection(server, user=user, password=password, raise_exceptions=raise_exceptions,
                            receive_timeout=max(1, round(settings.ldap_timeout_s)))


def _close(connection: ldap3.Connection) -> None:
    """Close the socket whatever happened (a refused bind leaves it open: one leaked socket per guess)."""
    with contextlib.suppress(LDAPException):
        connection.unbind()

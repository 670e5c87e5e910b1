"""The admin's model views (starlette-admin over the SQLModel tables): administrators only; every change
is audited and announced to the gateways, which drop their cached authorisation within a second."""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape
from typing import Any

from sqlalchemy.exc import IntegrityError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette_admin import (
    BooleanField,
    ComputedField,
    DateTimeField,
    EnumField,
    FloatField,
    HasOne,
    IntegerField,
    JSONField,
    PasswordField,
    StringField,
)
from starlette_admin.actions import ActionSelection, action
from starlette_admin.contrib.sqla import ModelView
from starlette_admin.exceptions import FormValidationError

from modelport.admin.auth import is_administrator
from modelport.db import admin_reads, directory, queries
from modelport.db.directory import PASSWORDS
from modelport.db.tables import (
    ApiToken,
    AuditEntry,
    Group,
    Membership,
    RateLimit,
    UsageRecord,
    User,
)

# The column a NOT NULL or UNIQUE refusal names, as SQLite and PostgreSQL word it.
REFUSED_COLUMN = re.compile(r'(?:constraint failed: \w+\.|null value in column ")(\w+)')


class AdminView(ModelView):
    """Reachable only by administrators (checked on every request, by URL as well as by menu). Changes are
    audited and announced once they are committed (before, gateways would reload and cache the old state).
    Rows are never imported from files: every change goes through a form, its checks and its audit entry."""

    def is_accessible(self, request: Request) -> bool:
        return is_administrator(request)

    def can_import(self, request: Request) -> bool:
        return False

    async def after_create_committed(self, request: Request, obj: Any) -> None:
        await self._changed(request, "create", obj)

    async def after_edit_committed(self, request: Request, obj: Any) -> None:
        await self._changed(request, "edit", obj)

    async def after_delete_committed(self, request: Request, obj: Any) -> None:
        await self._changed(request, "delete", obj)

    async def _changed(self, request: Request, verb: str, obj: Any) -> None:
        table = getattr(type(obj), "__tablename__", "row")
        await request.state.services.changed(request, f"{table}.{verb}", await self.audit_target(request, obj))

    async def audit_target(self, request: Request, obj: Any) -> str:
        """What the audit log names as changed."""
        return str(getattr(obj, "name", obj))

    async def handle_exception(self, request: Request, exc: Exception) -> None:
        """A row the database refuses (a required value left out of a hand-made form, a duplicate) is the
        form's error, never a 500; nothing is written."""
        if isinstance(exc, IntegrityError):
            column = REFUSED_COLUMN.search(str(exc.orig))
            field = column.group(1) if column else "name"
            raise FormValidationError({field: "The database refused this value (missing, or already used)."})
        await super().handle_exception(request, exc)


async def related_name(request: Request, obj: Any, relation: str, model: type[Any]) -> str:
    """The name of a related row: loaded with the object (a deleted row) or looked up by its id (never a
    lazy load, which async sessions cannot do)."""
    loaded = admin_reads.loaded_name(obj, relation)
    if loaded is not None:
        return loaded
    row_id = getattr(obj, f"{relation}_id")
    async with request.state.services.sessions() as session:
        name = await admin_reads.name_of(session, model, row_id)
    return name if name is not None else f"#{row_id}"


class NamedView(AdminView):
    """Rows other views point at (users, groups, models): shown and picked by name, never by id."""

    searchable_fields = ["name"]

    async def repr(self, obj: Any, request: Request) -> str:
        return str(obj.name)

    async def select2_result(self, obj: Any, request: Request) -> str:
        return f"<span>{escape(obj.name)}</span>"


class ReadOnlyView(AdminView):
    def can_create(self, request: Request) -> bool:
        return False

    def can_edit(self, request: Request) -> bool:
        return False

    def can_delete(self, request: Request) -> bool:
        return False


class OptionalFloatField(FloatField):
    """starlette-admin's FloatField fails (a 500) on a form without the field; absent is empty here."""

    async def parse_form_data(self, request: Request, form_data: FormData) -> float | None:
        return None if form_data.get(self.id) in (None, "") else await super().parse_form_data(request, form_data)


class NewPasswordField(PasswordField):
    """Always shown empty: a stored hash never reaches a page (and so is never posted back as a password)."""

    async def serialize_value(self, request: Request, value: Any) -> Any:
        return ""


class UserView(NamedView):
    fields = [StringField("name", required=True), StringField("display_name"), StringField("email"),
              NewPasswordField("password_hash", label="New password (local accounts; empty keeps the current one)"),
              EnumField("source", choices=(("local", "local"), ("ldap", "ldap"))), BooleanField("is_admin"),
              BooleanField("active"), DateTimeField("deleted_at", label="Deleted (soft)")]
    exclude_fields_from_list = ["password_hash"]
    exclude_fields_from_detail = ["password_hash"]
    searchable_fields = ["name", "display_name", "email"]
    actions = ["sign_out"]

    async def before_create(self, request: Request, data: dict[str, Any], obj: User) -> None:
        obj.password_hash = PASSWORDS.hash(data["password_hash"]) if data.get("password_hash") else None

    async def before_edit(self, request: Request, data: dict[str, Any], obj: User) -> None:
        """A new password is hashed and ends the user's admin sessions; an empty field keeps the stored hash."""
        if data.get("password_hash"):
            obj.password_hash = PASSWORDS.hash(data["password_hash"])
            obj.session_version += 1
            return
        async with request.state.services.sessions() as session:
            obj.password_hash = await admin_reads.stored_password_hash(session, obj.id)

    @action(name="sign_out", text="Sign out everywhere", confirmation="End every admin session of these users?",
            submit_btn_text="Sign out")
    async def sign_out(self, request: Request, selection: ActionSelection) -> str:
        users: Sequence[User] = await selection.rows()
        await directory.sign_out(request.state.session, request.session.get("user", "?"), users)
        await request.state.services.announce("user.sign_out")
        return f"Signed out {len(users)} user(s)."


class GroupView(NamedView):
    fields = [StringField("name", required=True), StringField("description"),
              JSONField("permissions", label="Permissions (JSON list, e.g. [\"read_api_token\"])"),
              IntegerField("priority")]


class MembershipView(AdminView):
    fields = [HasOne("user", key="user", required=True), HasOne("group", key="group", required=True)]

    async def audit_target(self, request: Request, obj: Any) -> str:
        user, group = await related_name(request, obj, "user", User), await related_name(request, obj, "group", Group)
        return f"{user} in {group}"


async def _token_models(request: Request, obj: ApiToken) -> str:
    """The models the token's owner may use (through their groups), as the gateway decides."""
    async with request.state.services.sessions() as session:
        return ", ".join(sorted(await queries.permitted_models(session, obj.user_id))) or "none"


async def _limit_subject(request: Request, obj: RateLimit) -> str:
    async with request.state.services.sessions() as session:
        return await admin_reads.limit_subject(session, obj.scope, obj.subject_id)


class TokenView(AdminView):
    fields = [StringField("prefix"), HasOne("user", key="user", label="Owner"), StringField("name"),
              ComputedField("models", label="Models", getter=_token_models), DateTimeField("created_at"),
              DateTimeField("expires_at"), DateTimeField("revoked_at"), DateTimeField("last_used_at")]
    searchable_fields = ["prefix", "name"]
    actions = ["revoke"]

    def can_create(self, request: Request) -> bool:
        return False

    def can_edit(self, request: Request) -> bool:
        return False

    @action(name="revoke", text="Revoke", confirmation="Revoke the selected tokens? Gateways refuse them at once.",
            submit_btn_text="Revoke")
    async def revoke(self, request: Request, selection: ActionSelection) -> str:
        services = request.state.services
        tokens: Sequence[ApiToken] = await selection.rows()
        async with services.sessions() as session:
            for token in tokens:
                await directory.revoke_token(session, request.session.get("user", "?"), token.prefix, exact=True)
        await services.announce("token.revoke")
        return f"Revoked {len(tokens)} token(s)."


class LimitView(AdminView):
    fields = [EnumField("scope", choices=(("token", "token"), ("user", "user"), ("group", "group"))),
              IntegerField("subject_id", label="Subject id", exclude_from_list=True),
              ComputedField("subject", label="Subject", getter=_limit_subject), IntegerField("requests_per_minute"),
              IntegerField("tokens_per_minute"), IntegerField("tokens_per_day"), IntegerField("concurrent_requests"),
              OptionalFloatField("budget_day", label="Budget per day", default=0.0),
              OptionalFloatField("budget_month", label="Budget per month", default=0.0),
              OptionalFloatField("budget_total", label="Budget in all", default=0.0)]

    async def validate(self, request: Request, data: dict[str, Any]) -> None:
        """Limits and budgets are zero (none) or positive; a budget left empty is none."""
        for budget in ("budget_day", "budget_month", "budget_total"):
            data[budget] = data.get(budget) or 0.0
        negative: dict[str | int, Any] = {name: "Zero (none) or more." for name, value in data.items()
                    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0}
        if negative:
            raise FormValidationError(negative)


class UsageView(ReadOnlyView):
    fields = [DateTimeField("created_at"), StringField("model"), IntegerField("user_id"), IntegerField("status"),
              IntegerField("prompt_tokens"), IntegerField("completion_tokens"), IntegerField("latency_ms"),
              StringField("job_id")]


class AuditView(ReadOnlyView):
    fields = [DateTimeField("created_at"), StringField("actor"), StringField("action"), StringField("target"),
              JSONField("detail")]


VIEWS: list[tuple[type[AdminView], type[Any], str, str]] = [
    (UserView, User, "user", "Users"), (GroupView, Group, "group", "Groups"),
    (MembershipView, Membership, "membership", "Memberships"), (TokenView, ApiToken, "token", "API tokens"),
    (LimitView, RateLimit, "limit", "Rate limits"), (UsageView, UsageRecord, "usage", "Usage records"),
    (AuditView, AuditEntry, "audit", "Audit log"),
]

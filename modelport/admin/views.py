"""The admin's model views (starlette-admin over the SQLModel tables): administrators only; every change
is audited and announced to the gateways, which drop their cached authorisation within a second."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from sqlalchemy import inspect
from starlette.requests import Request
from starlette_admin import (
    BooleanField,
    DateTimeField,
    EnumField,
    HasOne,
    IntegerField,
    JSONField,
    PasswordField,
    StringField,
)
from starlette_admin.actions import ActionSelection, action
from starlette_admin.contrib.sqla import ModelView
from starlette_admin.exceptions import FormValidationError

from modelport.db.directory import PASSWORDS
from modelport.db.tables import (
    LLM,
    ApiToken,
    AuditEntry,
    Grant,
    Group,
    Membership,
    RateLimit,
    UsageRecord,
    User,
    utcnow,
)
from modelport.protocol.errors import InvalidRequest
from modelport.workers.backends.registry import CONFIGS, validate_config


class AdminView(ModelView):
    """Reachable only by administrators (checked on every request, by URL as well as by menu)."""

    def is_accessible(self, request: Request) -> bool:
        user: User | None = getattr(request.state, "user", None)
        return user is not None and user.is_admin

    async def after_create(self, request: Request, obj: Any) -> None:
        await self._changed(request, "create", obj)

    async def after_edit(self, request: Request, obj: Any) -> None:
        await self._changed(request, "edit", obj)

    async def after_delete(self, request: Request, obj: Any) -> None:
        await self._changed(request, "delete", obj)

    async def _changed(self, request: Request, verb: str, obj: Any) -> None:
        table = getattr(type(obj), "__tablename__", "row")
        await request.state.services.changed(request, f"{table}.{verb}", await self.audit_target(request, obj))

    async def audit_target(self, request: Request, obj: Any) -> str:
        """What the audit log names as changed."""
        return str(getattr(obj, "name", obj))


async def related_name(request: Request, obj: Any, relation: str, model: type[Any]) -> str:
    """The name of a related row: loaded with the object (a deleted row) or looked up by its id (never a
    lazy load, which async sessions cannot do)."""
    if relation not in inspect(obj).unloaded:
        return str(getattr(obj, relation).name)
    row_id = getattr(obj, f"{relation}_id")
    async with request.state.services.sessions() as session:
        row = await session.get(model, row_id)
    return str(row.name) if row is not None else f"#{row_id}"


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


class UserView(NamedView):
    fields = [StringField("name", required=True), StringField("display_name"), StringField("email"),
              PasswordField("password_hash", label="Password (local accounts)"),
              EnumField("source", choices=(("local", "local"), ("ldap", "ldap"))), BooleanField("is_admin"),
              BooleanField("active"), DateTimeField("deleted_at", label="Deleted (soft)")]
    exclude_fields_from_list = ["password_hash"]
    exclude_fields_from_detail = ["password_hash"]
    searchable_fields = ["name", "display_name", "email"]

    async def before_create(self, request: Request, data: dict[str, Any], obj: User) -> None:
        obj.password_hash = PASSWORDS.hash(data["password_hash"]) if data.get("password_hash") else None

    async def before_edit(self, request: Request, data: dict[str, Any], obj: User) -> None:
        """A new password is hashed; an empty field keeps the stored hash."""
        if data.get("password_hash"):
            obj.password_hash = PASSWORDS.hash(data["password_hash"])
            return
        async with request.state.services.sessions() as session:
            stored = await session.get(User, obj.id)
        obj.password_hash = stored.password_hash if stored is not None else None


class GroupView(NamedView):
    fields = [StringField("name", required=True), StringField("description"),
              JSONField("permissions", label="Permissions (JSON list, e.g. [\"read_api_token\"])"),
              IntegerField("priority")]


class MembershipView(AdminView):
    fields = [HasOne("user", key="user", required=True), HasOne("group", key="group", required=True)]

    async def audit_target(self, request: Request, obj: Any) -> str:
        user, group = await related_name(request, obj, "user", User), await related_name(request, obj, "group", Group)
        return f"{user} in {group}"


class GrantView(AdminView):
    fields = [HasOne("group", key="group", required=True), HasOne("llm", key="llm", label="Model",
                                                                        required=True)]

    async def audit_target(self, request: Request, obj: Any) -> str:
        group, llm = await related_name(request, obj, "group", Group), await related_name(request, obj, "llm", LLM)
        return f"{group} may use {llm}"


class LLMView(NamedView):
    fields = [StringField("name", required=True),
              EnumField("backend", choices=tuple((name, name) for name in sorted(CONFIGS))),
              JSONField("config"), BooleanField("enabled"), IntegerField("max_queue")]

    async def validate(self, request: Request, data: dict[str, Any]) -> None:
        try:
            config = data.get("config") or {}
            data["config"] = validate_config(str(data.get("backend")), json.loads(config) if isinstance(
                config, str) else config)
        except (InvalidRequest, json.JSONDecodeError) as exc:
            raise FormValidationError({"config": getattr(exc, "message", str(exc))}) from None


class TokenView(AdminView):
    fields = [StringField("prefix"), HasOne("user", key="user"), StringField("name"), DateTimeField("created_at"),
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
        tokens: Sequence[ApiToken] = await selection.rows()
        session = request.state.session
        for token in tokens:
            token.revoked_at = token.revoked_at or utcnow()
            session.add(token)
        await session.commit()
        for token in tokens:
            await request.state.services.changed(request, "token.revoke", token.prefix)
        return f"Revoked {len(tokens)} token(s)."


class LimitView(AdminView):
    fields = [EnumField("scope", choices=(("token", "token"), ("user", "user"), ("group", "group"))),
              IntegerField("subject_id"), IntegerField("requests_per_minute"), IntegerField("tokens_per_minute"),
              IntegerField("tokens_per_day"), IntegerField("concurrent_requests")]


class UsageView(ReadOnlyView):
    fields = [DateTimeField("created_at"), StringField("model"), IntegerField("user_id"), IntegerField("status"),
              IntegerField("prompt_tokens"), IntegerField("completion_tokens"), IntegerField("latency_ms"),
              StringField("job_id")]


class AuditView(ReadOnlyView):
    fields = [DateTimeField("created_at"), StringField("actor"), StringField("action"), StringField("target"),
              JSONField("detail")]


VIEWS: list[tuple[type[AdminView], type[Any], str, str]] = [
    (UserView, User, "user", "Users"), (GroupView, Group, "group", "Groups"),
    (MembershipView, Membership, "membership", "Memberships"), (LLMView, LLM, "llm", "Models"),
    (GrantView, Grant, "grant", "Model grants"), (TokenView, ApiToken, "token", "API tokens"),
    (LimitView, RateLimit, "limit", "Rate limits"), (UsageView, UsageRecord, "usage", "Usage records"),
    (AuditView, AuditEntry, "audit", "Audit log"),
]

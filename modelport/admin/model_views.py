"""The admin's views of the names a request may use besides an LLM's: aliases, their grants and presets."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette_admin import (
    BooleanField,
    EnumField,
    FloatField,
    HasOne,
    IntegerField,
    JSONField,
    StringField,
    TextAreaField,
)
from starlette_admin.exceptions import FormValidationError

from modelport.admin.views import AdminView, NamedView, related_name
from modelport.db import admin_reads, directory, virtual_models
from modelport.db.tables import AliasGrant, Group, ModelAlias, Preset, PresetVisibility
from modelport.protocol.errors import InvalidRequest
from modelport.protocol.presets import PresetSettings


class OptionalFloatField(FloatField):
    """starlette-admin's FloatField fails (a 500) on a form without the field; absent is empty here."""

    async def parse_form_data(self, request: Request, form_data: FormData) -> float | None:
        return None if form_data.get(self.id) in (None, "") else await super().parse_form_data(request, form_data)


class AliasView(NamedView):
    fields = [StringField("name", required=True), HasOne("llm", key="llm", label="Model", required=True)]

    async def validate(self, request: Request, data: dict[str, Any]) -> None:
        await new_model_name(request, data, ModelAlias)


class AliasGrantView(AdminView):
    fields = [HasOne("group", key="group", required=True), HasOne("alias", key="alias", required=True)]

    async def audit_target(self, request: Request, obj: Any) -> str:
        group = await related_name(request, obj, "group", Group)
        return f"{group} may use {await related_name(request, obj, 'alias', ModelAlias)}"


class PresetView(NamedView):
    """Presets (Kuwa's bots); settings are checked like the CLI's, and a group's preset names its group."""

    fields = [StringField("name", required=True), HasOne("llm", key="llm", label="Model", required=True),
              StringField("description"), TextAreaField("system_prompt"), TextAreaField("before_prompt"),
              TextAreaField("after_prompt"), BooleanField("client_system", label="Clients may add system messages"),
              OptionalFloatField("temperature"), OptionalFloatField("top_p"),
              IntegerField("max_tokens", label="Max tokens (cap)"),
              JSONField("stop", label="Stop sequences (JSON list)"),
              EnumField("visibility", choices=tuple((kind.value, kind.value) for kind in PresetVisibility)),
              HasOne("group", key="group"), HasOne("owner", key="user", label="Owner"), BooleanField("enabled")]
    searchable_fields = ["name", "description"]

    async def validate(self, request: Request, data: dict[str, Any]) -> None:
        await new_model_name(request, data, Preset)
        for text in ("description", "system_prompt", "before_prompt", "after_prompt"):
            data[text] = data.get(text) or ""  # a form without the field leaves it empty, not NULL
        data["stop"] = data.get("stop") or []
        try:
            PresetSettings.checked({field: data.get(field) for field in PresetSettings.model_fields
                                    if data.get(field) not in (None, "")})
            virtual_models.check_visibility(str(data.get("visibility")), group=data.get("group") is not None,
                                            owner=data.get("owner") is not None)
        except InvalidRequest as exc:
            raise FormValidationError({exc.param or "name": exc.message}) from None


async def new_model_name(request: Request, data: dict[str, Any], table: type[ModelAlias] | type[Preset]) -> None:
    """LLMs, aliases and presets share one namespace: a new name, or an edited row's changed one, must be free."""
    name = str(data.get("name") or "")
    editing = request.query_params.get("pk") or request.path_params.get("pk")
    async with request.state.services.sessions() as session:
        if editing and str(editing).isdigit() and await admin_reads.name_of(session, table, int(editing)) == name:
            return
        try:
            await directory.require_new_model_name(session, name)
        except InvalidRequest as exc:
            raise FormValidationError({"name": exc.message}) from None


VIEWS: list[tuple[type[AdminView], type[Any], str, str]] = [
    (AliasView, ModelAlias, "alias", "Model aliases"), (AliasGrantView, AliasGrant, "alias-grant", "Alias grants"),
    (PresetView, Preset, "preset", "Presets (bots)"),
]

"""The admin's views of what requests name: LLMs (with live workers and a Test action) and their grants, aliases
and their grants, presets."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette_admin import (
    BooleanField,
    ComputedField,
    EnumField,
    HasOne,
    IntegerField,
    JSONField,
    StringField,
    TextAreaField,
)
from starlette_admin.actions import row_action
from starlette_admin.exceptions import ActionFailed, FormValidationError
from starlette_admin.flash import flash

from modelport.admin.views import AdminView, NamedView, OptionalFloatField, related_name
from modelport.db import admin_reads, directory, serving, virtual_models
from modelport.db.tables import LLM, LLM_KINDS, AliasGrant, Grant, Group, ModelAlias, Preset, PresetVisibility
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.errors import InvalidRequest
from modelport.protocol.presets import PresetSettings
from modelport.workers.backends.registry import CONFIGS, validate_config


class GrantView(AdminView):
    fields = [HasOne("group", key="group", required=True), HasOne("llm", key="llm", label="Model",
                                                                        required=True)]

    async def audit_target(self, request: Request, obj: Any) -> str:
        group, llm = await related_name(request, obj, "group", Group), await related_name(request, obj, "llm", LLM)
        return f"{group} may use {llm}"


async def _live(request: Request, obj: LLM) -> dict[str, Any]:
    """The model's live status, read once per page (every row of the list asks)."""
    if not hasattr(request.state, "live_status"):
        try:
            status = await request.state.services.status()
        except QUEUE_ERRORS:
            status = {"models": []}
        request.state.live_status = {model["name"]: model for model in status["models"]}
    found: dict[str, Any] = request.state.live_status.get(obj.name, {})
    return found


async def _live_workers(request: Request, obj: LLM) -> str:
    live = await _live(request, obj)
    return str(len(live["workers"])) if live else "?"


async def _waiting(request: Request, obj: LLM) -> str:
    live = await _live(request, obj)
    return f"{live['queue_depth']} waiting, {live['running']} running" if live else "?"


class LLMView(NamedView):
    """Models: listed with their live workers and queue; edited here (raw config), registered with the form
    of ``model_form``; the Test action sends one short request through the model's queue."""

    fields = [StringField("name", required=True),
              EnumField("kind", choices=tuple((kind, kind) for kind in LLM_KINDS)),
              EnumField("backend", choices=tuple((name, name) for name in sorted(CONFIGS))),
              JSONField("config"), BooleanField("enabled", default=True), IntegerField("max_queue", default=256),
              BooleanField("scale_to_zero", label="Scale to zero", exclude_from_list=True,
                           help_text="With no live worker, requests wait in the queue for one an autoscaler "
                                     "starts, instead of failing with 503"),
              ComputedField("live_workers", label="Live workers", getter=_live_workers),
              ComputedField("queue", label="Queue", getter=_waiting),
              JSONField("deployments", label='More deployments: {"NAME": {"backend": ..., "config": {...}}}'),
              JSONField("fallbacks", label="Fallbacks (JSON list of LLM names, tried in order)"),
              OptionalFloatField("input_price", label="Input price", default=0.0,
                                 help_text="Per million prompt tokens, in MODELPORT_CURRENCY; from the next request"),
              OptionalFloatField("output_price", label="Output price", default=0.0,
                                 help_text="Per million completion tokens"),
              OptionalFloatField("cached_input_price", label="Cached input price", exclude_from_list=True)]

    exclude_fields_from_list = ["config", "deployments"]
    row_actions = ["view", "edit", "test", "delete"]

    @row_action(name="test", text="Test", icon_class="fa fa-vial", action_btn_class="btn-outline-primary")
    async def test(self, request: Request, pk: Any) -> None:
        """One short request through the model's queue and workers: its answer (flashed on the list it returns
        to), or its exact error."""
        llm: LLM = await self.find_by_pk(request, pk)
        try:
            answer, error = await request.state.services.try_model(request.state.user, llm.name)
        except QUEUE_ERRORS:
            raise ActionFailed(f"{llm.name}: the job queue (Redis) is unreachable.") from None
        if error is not None:
            raise ActionFailed(f"{llm.name} failed: {error.status} {error.code}: {error.message}")
        flash(request, f"{llm.name} answered: {answer}", "success")

    async def validate(self, request: Request, data: dict[str, Any]) -> None:
        """Every config is checked for its backend (the LLM's own and each deployment's); fallbacks name other
        registered LLMs."""
        policy = request.state.services.settings.upstream_policy()
        for price in ("input_price", "output_price"):
            data[price] = data.get(price) or 0.0  # left empty: free
        negative: dict[str | int, Any] = {name: "Zero (free) or more." for name in (
            "input_price", "output_price", "cached_input_price") if (data.get(name) or 0) < 0}
        if negative:
            raise FormValidationError(negative)
        try:
            data["config"] = validate_config(str(data.get("backend")), _json(data.get("config"), {}), policy)
        except (InvalidRequest, ValueError) as exc:
            raise FormValidationError({"config": getattr(exc, "message", str(exc))}) from None
        try:
            deployments = _json(data.get("deployments"), {})
            for name, deployment in deployments.items():
                serving.check_deployment_name(name)
                deployment["config"] = validate_config(str(deployment["backend"]), deployment.get("config") or {},
                                                       policy)
                if "price" in deployment:
                    deployment["price"] = serving.checked_price(deployment["price"])
            data["deployments"] = deployments
        except (InvalidRequest, ValueError, KeyError, TypeError, AttributeError) as exc:
            problem = getattr(exc, "message", f"not a map of deployments ({exc})")
            raise FormValidationError({"deployments": problem}) from None
        try:
            data["fallbacks"] = _json(data.get("fallbacks"), [])
            async with request.state.services.sessions() as session:
                await serving.check_fallbacks(session, str(data.get("name")), data["fallbacks"])
        except (InvalidRequest, ValueError) as exc:
            raise FormValidationError({"fallbacks": getattr(exc, "message", str(exc))}) from None


def _json(value: Any, empty: Any) -> Any:
    """A JSON field's value: parsed from text, or as the form gave it; ``empty`` when left empty."""
    parsed = json.loads(value) if isinstance(value, str) and value.strip() else value
    if parsed in (None, ""):
        return empty
    if not isinstance(parsed, type(empty)):
        raise ValueError(f"expected a JSON {'object' if isinstance(empty, dict) else 'list'}")
    return parsed


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
    (LLMView, LLM, "llm", "Models"), (GrantView, Grant, "grant", "Model grants"),
    (AliasView, ModelAlias, "alias", "Model aliases"), (AliasGrantView, AliasGrant, "alias-grant", "Alias grants"),
    (PresetView, Preset, "preset", "Presets (bots)"),
]

"""Registering a model without knowing config keys by heart: the chosen backend's own fields (from its config
schema, with their help texts), checked as the CLI checks them, errors next to the field; enabled and granted
in one go; then a Test button that sends one short request through the model's queue and workers."""

from __future__ import annotations

import time
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette_admin import CustomView
from starlette_admin.routing import route

from modelport.admin.auth import is_administrator
from modelport.admin.services import AdminServices
from modelport.db import admin_reads, directory
from modelport.db.edits import MAX_QUEUE
from modelport.db.tables import LLM_KINDS
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.errors import InvalidRequest, ModelPortError, NoWorker
from modelport.workers.backends.registry import CONFIGS, validate_config

MAX_GROUPS = 64


def _kind(info: FieldInfo) -> str:
    types = {arg for arg in (*get_args(info.annotation), info.annotation) if isinstance(arg, type)}
    if bool in types:
        return "checkbox"
    if list in types or getattr(info.annotation, "__origin__", None) is list:
        return "list"
    if types & {int, float}:
        return "number"
    return "text"


def schema_fields(schema: type[BaseModel]) -> list[dict[str, Any]]:
    """How the form shows each config field: its input kind, whether it is required, its default, its help."""
    fields = []
    for name, info in schema.model_fields.items():
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        fields.append({"name": name, "kind": _kind(info), "required": info.is_required(), "help": info.description,
                       "default": ", ".join(default) if isinstance(default, list) else default})
    return fields


BACKENDS = {backend: schema_fields(schema) for backend, schema in sorted(CONFIGS.items())}


def config_from_form(backend: str, form: FormData) -> dict[str, Any]:
    """The config the form describes for ``backend`` (empty fields keep their defaults)."""
    config: dict[str, Any] = {}
    for field in BACKENDS.get(backend, []):
        raw = str(form.get(f"{backend}.{field['name']}", "")).strip()
        if field["kind"] == "checkbox":
            config[field["name"]] = raw == "on"
        elif field["kind"] == "list" and raw:
            config[field["name"]] = [item.strip() for item in raw.split(",") if item.strip()]
        elif raw:
            config[field["name"]] = raw
    return config


class RegisterModelView(CustomView):
    menu_label = "Register a model"
    icon = "fa fa-plus"
    path = "/register-model"
    route_name = "register-model"

    def is_accessible(self, request: Request) -> bool:
        return is_administrator(request)

    @route("", methods=["GET", "POST"])
    async def index(self, request: Request) -> Response:
        services: AdminServices = request.state.services
        errors: dict[str, str] = {}
        registered = None
        form = await request.form() if request.method == "POST" else FormData()
        if request.method == "POST":
            registered, errors = await self._register(request, form)
        async with services.sessions() as session:
            groups = await admin_reads.group_names(session)
        context: dict[str, Any] = {
            "title": "Register a model", "backends": BACKENDS, "kinds": LLM_KINDS, "form": form, "errors": errors,
            "registered": registered, "groups": groups, "csrf": request.state.csrf_token,
            "chosen": str(form.get("backend") or "openai_compat"), "base": str(request.scope.get("root_path", ""))}
        assert self.templates is not None
        return self.templates.TemplateResponse(request=request, name="register_model.html", context=context,
                                               status_code=422 if errors else 200)

    async def _register(self, request: Request, form: FormData) -> tuple[str | None, dict[str, str]]:
        """Register the model the form describes (all or nothing); its name, or the errors by field."""
        services: AdminServices = request.state.services
        actor: str = request.state.user.name
        name, backend = str(form.get("name", "")).strip(), str(form.get("backend", ""))
        groups = [str(group) for group in form.getlist("groups")][:MAX_GROUPS]
        max_queue = str(form.get("max_queue") or "256")
        if not max_queue.isdigit() or not 1 <= int(max_queue) <= MAX_QUEUE:
            return None, {"max_queue": f"A whole number from 1 to {MAX_QUEUE}."}
        async with services.sessions() as session:
            unknown = set(groups) - set(await admin_reads.group_names(session))
            if unknown:
                return None, {"groups": f"No group named '{sorted(unknown)[0]}'."}
            try:
                config = validate_config(backend, config_from_form(backend, form), services.settings.upstream_policy())
                await directory.add_llm(session, actor, name, backend, config, max_queue=int(max_queue),
                                        enabled=form.get("enabled") == "on", kind=str(form.get("kind") or "chat"))
            except InvalidRequest as exc:
                own = {field["name"] for field in BACKENDS.get(backend, [])}
                return None, {f"{backend}.{exc.param}" if exc.param in own else exc.param or "name": exc.message}
            for group in groups:
                await directory.grant(session, actor, group, name)
        await services.announce("llm.add")
        return name, {}

    @route("/test", methods=["POST"])
    async def test(self, request: Request) -> Response:
        """``{"ok", "answer", "error", "elapsed_ms"}`` of one short request to the model named by ``model``."""
        services: AdminServices = request.state.services
        model = str((await request.form()).get("model", ""))
        started = time.monotonic()
        try:
            answer, error = await services.try_model(request.state.user, model)
        except ModelPortError as exc:
            answer, error = "", exc.body()
        except QUEUE_ERRORS:
            answer, error = "", NoWorker("The job queue (Redis) is unreachable.", code="queue_unavailable").body()
        return JSONResponse({"ok": error is None, "answer": answer, "elapsed_ms": round(
            (time.monotonic() - started) * 1000), "error": error.model_dump() if error is not None else None})

"""Every signed-in user's own presets (Kuwa's bots): private ones of the LLMs they may use, made and
removed by members of a group holding the ``create_preset`` permission (and administrators)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette_admin import CustomView
from starlette_admin.routing import route

from modelport.admin.profile import MAX_ROW_ID
from modelport.admin.services import AdminServices
from modelport.db import admin_reads, queries, virtual_models
from modelport.db.tables import PresetVisibility, User
from modelport.protocol.errors import InvalidRequest
from modelport.protocol.presets import PresetSettings

TEXT_FIELDS = ("system_prompt", "before_prompt", "after_prompt")
NUMBER_FIELDS = ("temperature", "top_p", "max_tokens")


class MyPresetsView(CustomView):
    menu_label = "My presets"
    icon = "fa fa-robot"
    path = "/my-presets"
    route_name = "my-presets"

    @route("")
    async def index(self, request: Request) -> Response:
        return await self._page(request)

    @route("/presets", methods=["POST"])
    async def create(self, request: Request) -> Response:
        services: AdminServices = request.state.services
        user: User = request.state.user
        form = await request.form()
        values = {field: str(form.get(field) or "") for field in ("name", "llm", "description", *TEXT_FIELDS,
                                                                 *NUMBER_FIELDS)}
        async with services.sessions() as session:
            if not await admin_reads.may(session, user, virtual_models.CREATE_PRESET):
                return await self._page(request, status_code=403)
            try:
                if values["llm"] not in await queries.granted_llms(session, user.id or 0):
                    raise InvalidRequest(f"You may not use an LLM named '{values['llm']}'.", param="llm")
                settings = PresetSettings.checked({field: values[field] for field in (*TEXT_FIELDS, *NUMBER_FIELDS)
                                                   if values[field]})
                await virtual_models.add_preset(session, user.name, values["name"], values["llm"], settings,
                                                visibility=PresetVisibility.PRIVATE, owner_name=user.name,
                                                description=values["description"])
            except InvalidRequest as exc:
                return await self._page(request, error=exc.message, status_code=400)
        await services.announce("preset.add")
        return RedirectResponse(self._url(request), status_code=303)

    @route("/presets/{preset_id:int}/remove", methods=["POST"])
    async def remove(self, request: Request) -> Response:
        services: AdminServices = request.state.services
        preset_id: int = request.path_params["preset_id"]
        if not 0 < preset_id < MAX_ROW_ID:
            return await self._page(request, status_code=404)
        async with services.sessions() as session:
            preset = await admin_reads.preset(session, preset_id)
            if preset is None or preset.owner_id != request.state.user.id:
                return await self._page(request, status_code=404)
            await virtual_models.remove_preset(session, request.state.user.name, preset.name)
        await services.announce("preset.remove")
        return RedirectResponse(self._url(request), status_code=303)

    def _url(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")) + self.path

    async def _page(self, request: Request, error: str | None = None, status_code: int = 200) -> Response:
        services: AdminServices = request.state.services
        user: User = request.state.user
        async with services.sessions() as session:
            presets = await admin_reads.presets_owned(session, user.id or 0)
            llms = sorted(await queries.granted_llms(session, user.id or 0))
            allowed = await admin_reads.may(session, user, virtual_models.CREATE_PRESET)
        context: dict[str, Any] = {"title": "My presets", "user": user, "presets": presets, "llms": llms,
                                   "allowed": allowed, "error": error, "page_url": self._url(request)}
        assert self.templates is not None
        return self.templates.TemplateResponse(request=request, name="my_presets.html", context=context,
                                               status_code=status_code)

"""The admin app's home page: for administrators the live status of every model, worker and gateway
(refreshing itself every two seconds from ``status.json``); for everyone, where to go next."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette_admin import CustomView
from starlette_admin.routing import route

from modelport.admin.auth import is_administrator
from modelport.admin.local_time import SCRIPT
from modelport.admin.services import AdminServices
from modelport.db import queries
from modelport.db.tables import User
from modelport.protocol.connection import QUEUE_ERRORS


class DashboardView(CustomView):
    menu_label = "Home"
    icon = "fa fa-gauge"
    path = "/"
    route_name = "index"  # where starlette-admin sends people after signing in

    @route("")
    async def index(self, request: Request) -> Response:
        services: AdminServices = request.state.services
        user: User = request.state.user
        async with services.sessions() as session:
            models = sorted(await queries.permitted_models(session, user.id or 0))
        base = str(request.scope.get("root_path", ""))
        context: dict[str, Any] = {"title": "Home", "user": user, "models": models, "base": base}
        assert self.templates is not None
        return self.templates.TemplateResponse(request=request, name="dashboard.html", context=context)

    @route("/local_time.js")
    async def local_time_js(self, request: Request) -> Response:
        return FileResponse(SCRIPT, media_type="text/javascript")

    @route("/status.json")
    async def status(self, request: Request) -> Response:
        if not is_administrator(request):
            return JSONResponse({"error": "administrators only"}, status_code=403)
        services: AdminServices = request.state.services
        try:
            return JSONResponse(await services.status(), headers={"cache-control": "no-store"})
        except QUEUE_ERRORS:
            return JSONResponse({"error": "Redis is unreachable; the status cannot be read."}, status_code=503)

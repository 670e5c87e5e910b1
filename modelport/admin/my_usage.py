"""Every signed-in user's own usage: this month's requests and tokens per model and their latest requests."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette_admin import CustomView
from starlette_admin.routing import route

from modelport.admin.services import AdminServices
from modelport.db import admin_reads
from modelport.db.tables import User, utcnow


class MyUsageView(CustomView):
    menu_label = "My usage"
    icon = "fa fa-receipt"
    path = "/my-usage"
    route_name = "my-usage"

    @route("")
    async def index(self, request: Request) -> Response:
        services: AdminServices = request.state.services
        user: User = request.state.user
        month = utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        async with services.sessions() as session:
            recent, by_model = await admin_reads.usage_of(session, user.id or 0, month)
        context: dict[str, Any] = {"title": "My usage", "user": user, "recent": recent, "by_model": by_model,
                                   "month": month.strftime("%B %Y"), "base": str(request.scope.get("root_path", ""))}
        assert self.templates is not None
        return self.templates.TemplateResponse(request=request, name="my_usage.html", context=context)

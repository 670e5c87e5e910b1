"""Every signed-in user's own usage: this month's requests, tokens and cost per model, the budgets over their
requests with what is left, and their latest requests."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette_admin import CustomView
from starlette_admin.routing import route

from modelport.admin.services import AdminServices
from modelport.db import admin_reads, spend_reads
from modelport.db.tables import User, utcnow
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.spend import month_span, periods


class MyUsageView(CustomView):
    menu_label = "My usage"
    icon = "fa fa-receipt"
    path = "/my-usage"
    route_name = "my-usage"

    @route("")
    async def index(self, request: Request) -> Response:
        services: AdminServices = request.state.services
        user: User = request.state.user
        zone = services.settings.zone()
        month, end = month_span(periods(utcnow(), zone).month, zone)
        async with services.sessions() as session:
            recent, by_model = await admin_reads.usage_of(session, user.id or 0, month)
            by_day = (await spend_reads.spend(session, month, end, zone, user_id=user.id or 0)).by_day
        try:
            rates, budgets = await services.limits(user)
        except QUEUE_ERRORS:
            rates, budgets = [], []
        context: dict[str, Any] = {"title": "My usage", "user": user, "recent": recent, "by_model": by_model,
                                   "by_day": sorted(by_day.items()), "rates": rates, "budgets": budgets,
                                   "currency": services.settings.currency,
                                   "total_cost": sum(cost for *_, cost in by_model),
                                   "month": f"{month:%B %Y} ({zone.key})",
                                   "base": str(request.scope.get("root_path", ""))}
        assert self.templates is not None
        return self.templates.TemplateResponse(request=request, name="my_usage.html", context=context)

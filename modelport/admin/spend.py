"""The spend page for administrators: a month's cost by group, user and model, the top spenders of the last
seven days, and the month's chargeback CSV (per group, user and model; all groups or one)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette_admin import CustomView
from starlette_admin.routing import route

from modelport.admin.auth import is_administrator
from modelport.admin.services import AdminServices
from modelport.db import spend_reads
from modelport.protocol.spend import month_span, periods

TOP_SPENDERS = 10


class SpendView(CustomView):
    menu_label = "Spend"
    icon = "fa fa-coins"
    path = "/spend"
    route_name = "spend"

    def is_accessible(self, request: Request) -> bool:
        return is_administrator(request)

    def _month(self, request: Request, services: AdminServices) -> tuple[str, datetime, datetime]:
        """The month asked for (``?month=2026-11``), this month when absent or not a month."""
        zone = services.settings.zone()
        month = request.query_params.get("month", "")
        try:
            return (month, *month_span(month, zone))
        except ValueError:
            month = periods(datetime.now(UTC), zone).month
            return (month, *month_span(month, zone))

    @route("")
    async def index(self, request: Request) -> Response:
        services: AdminServices = request.state.services
        month, start, end = self._month(request, services)
        zone = services.settings.zone()
        now = datetime.now(UTC)
        async with services.sessions() as session:
            found = await spend_reads.spend(session, start, end, zone)
            week = await spend_reads.spend(session, now - timedelta(days=7), now, zone)
        top = sorted(week.by_user.items(), key=lambda item: item[1].cost, reverse=True)[:TOP_SPENDERS]
        context: dict[str, Any] = {
            "title": "Spend", "month": month, "found": found, "top": top, "currency": services.settings.currency,
            "base": str(request.scope.get("root_path", "")) + self.path,
            "previous": (start - timedelta(days=1)).strftime("%Y-%m"), "next": end.strftime("%Y-%m")}
        assert self.templates is not None
        return self.templates.TemplateResponse(request=request, name="spend.html", context=context)

    @route("/chargeback.csv")
    async def chargeback(self, request: Request) -> Response:
        services: AdminServices = request.state.services
        month, start, end = self._month(request, services)
        group = request.query_params.get("group") or None
        async with services.sessions() as session:
            found = await spend_reads.spend(session, start, end, services.settings.zone(), group=group)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=spend_reads.CHARGEBACK_COLUMNS)
        writer.writeheader()
        writer.writerows(spend_reads.chargeback(found, month, services.settings.currency))
        name = f"modelport-chargeback-{month}{'-' + group if group else ''}.csv"
        safe = "".join(character for character in name if character.isalnum() or character in "-._")
        return Response(out.getvalue(), media_type="text/csv",
                        headers={"content-disposition": f'attachment; filename="{safe}"'})

"""The usage page for administrators: requests and tokens per day, per model, per user and per endpoint, as charts
(Chart.js 4, vendored under static/), and the records behind them as CSV."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette_admin import CustomView
from starlette_admin.routing import route

from modelport.admin.auth import is_administrator
from modelport.admin.services import AdminServices
from modelport.db import admin_reads
from modelport.db.tables import UsageRecord, as_utc, utcnow

CHART_JS = Path(__file__).parent / "static" / "chart.umd.min.js"
DAYS = 30


class UsageChartsView(CustomView):
    menu_label = "Usage"
    icon = "fa fa-chart-line"
    path = "/usage"
    route_name = "usage"

    def is_accessible(self, request: Request) -> bool:
        return is_administrator(request)

    @route("")
    async def index(self, request: Request) -> Response:
        records, names = await self._records(request)
        by_model: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        by_user: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        by_endpoint: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        for record in records:
            day = as_utc(record.created_at or utcnow()).date().isoformat()
            tokens = record.prompt_tokens + record.completion_tokens
            for table, key in ((by_model, record.model), (by_user, names.get(record.user_id or 0, "?")),
                               (by_endpoint, record.endpoint)):
                table[key][day][0] += 1
                table[key][day][1] += tokens
        days = [(utcnow() - timedelta(days=back)).date().isoformat() for back in range(DAYS - 1, -1, -1)]
        context: dict[str, Any] = {"title": "Usage", "days": days, "charts": {
            "requests-by-model": _series(by_model, days, 0), "tokens-by-model": _series(by_model, days, 1),
            "requests-by-user": _series(by_user, days, 0), "tokens-by-user": _series(by_user, days, 1),
            "requests-by-endpoint": _series(by_endpoint, days, 0), "tokens-by-endpoint": _series(by_endpoint, days, 1)},
            "total": len(records), "base": str(request.scope.get("root_path", "")) + self.path}
        assert self.templates is not None
        return self.templates.TemplateResponse(request=request, name="usage.html", context=context)

    @route("/chart.js")
    async def chart_js(self, request: Request) -> Response:
        return FileResponse(CHART_JS, media_type="text/javascript")

    @route("/export.csv")
    async def export(self, request: Request) -> Response:
        records, names = await self._records(request)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["created_at", "user", "model", "endpoint", "status", "stream", "prompt_tokens",
                         "completion_tokens", "latency_ms", "ttft_ms", "job_id"])
        for record in records:
            writer.writerow([record.created_at, names.get(record.user_id or 0, ""), record.model, record.endpoint,
                             record.status,
                             record.stream, record.prompt_tokens, record.completion_tokens, record.latency_ms,
                             record.ttft_ms, record.job_id])
        return Response(out.getvalue(), media_type="text/csv",
                        headers={"content-disposition": 'attachment; filename="modelport-usage.csv"'})

    async def _records(self, request: Request) -> tuple[list[UsageRecord], dict[int, str]]:
        services: AdminServices = request.state.services
        since = utcnow() - timedelta(days=DAYS)
        async with services.sessions() as session:
            return await admin_reads.usage_since(session, since)


def _series(table: dict[str, dict[str, list[int]]], days: list[str], field: int) -> list[dict[str, Any]]:
    return [{"label": key, "data": [per_day[day][field] if day in per_day else 0 for day in days]}
            for key, per_day in sorted(table.items())]

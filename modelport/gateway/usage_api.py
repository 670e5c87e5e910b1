"""``GET /v1/usage``: what the token's user used and spent this day or month (``?period=day|month``), in all
and by day and model, in the installation's currency and time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from modelport.db import spend_reads
from modelport.db.spend_reads import Totals
from modelport.gateway.json_response import FastJSONResponse
from modelport.gateway.state import GatewayState
from modelport.protocol.errors import InvalidRequest
from modelport.protocol.spend import current_span

PERIODS = ("day", "month")


def _totals(totals: Totals) -> dict[str, Any]:
    return {"requests": totals.requests, "tokens": totals.tokens, "cost": round(totals.cost, 8)}


async def usage(request: Request) -> Response:
    state: GatewayState = request.state.gateway
    principal = await state.auth.principal(request.headers.get("authorization"))
    period = request.query_params.get("period", "month")
    if period not in PERIODS:
        raise InvalidRequest("period is 'day' or 'month'.", param="period")
    zone = state.settings.zone()
    start, end = current_span(period, datetime.now(UTC), zone)
    async with state.sessions() as session:
        found = await spend_reads.spend(session, start, end, zone, user_id=principal.user_id)
    return FastJSONResponse({
        "object": "usage", "period": period, "start": start.isoformat(), "end": end.isoformat(),
        "currency": state.settings.currency, "total_cost": round(found.total.cost, 8),
        "total_tokens": found.total.tokens, "total_requests": found.total.requests,
        "by_day": [{"date": day, **_totals(totals)} for day, totals in sorted(found.by_day.items())],
        "by_model": [{"model": model, **_totals(totals)} for model, totals in sorted(found.by_model.items())]},
        headers={"cache-control": "no-store"})

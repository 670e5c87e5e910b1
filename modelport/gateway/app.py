"""``create_app(settings)``: the gateway's routes, error handlers, CORS and the lifespan that owns the
broker, the auth cache, the usage writer and their background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from modelport import tracing
from modelport.broker.gateway import GatewayBroker
from modelport.broker.limits import LimitSubject
from modelport.db import queries
from modelport.db.engine import create_engine, session_factory
from modelport.gateway import endpoints, errors, kuwa_api, operational, responses_api, usage_api
from modelport.gateway.access_log import AccessLog
from modelport.gateway.auth import Authenticator
from modelport.gateway.chat import abort, chat_completions
from modelport.gateway.metrics import GatewayMetrics
from modelport.gateway.models import list_models, retrieve_model
from modelport.gateway.operational import healthz, readyz
from modelport.gateway.settings import GatewaySettings
from modelport.gateway.state import GatewayState
from modelport.gateway.trace_requests import TraceRequests
from modelport.gateway.usage import Outcome, UsageWriter
from modelport.heap import freeze_startup_objects
from modelport.logs import configure_logging
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.errors import ModelPortError
from modelport.protocol.spend import Periods, month_span

log = logging.getLogger(__name__)


def create_app(settings: GatewaySettings) -> Starlette:
    metrics = GatewayMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, GatewayState]]:
        engine = create_engine(settings.database_url)
        sessions = session_factory(engine)
        zone = settings.zone()

        async def spent(subject: LimitSubject, current: Periods) -> tuple[float, float, float]:
            async with sessions() as session:
                return await queries.spent_by(session, subject.name, current.day_ends - timedelta(days=1),
                                              month_span(current.month, zone)[0])

        broker = GatewayBroker(settings.redis_target(), settings.gateway_lease_s, currency=settings.currency,
                               on_alert=metrics.budget_alert, spent=spent)
        auth = Authenticator(sessions, settings.auth_cache_ttl_s)
        usage = UsageWriter(sessions, settings.usage_flush_s, settings.cancel_settle_s,
                            lambda outcome: _recorded(outcome, metrics, broker))
        await broker.start()
        tasks = [asyncio.create_task(usage.run()),
                 asyncio.create_task(_follow_invalidations(broker, auth, sessions, metrics))]
        freeze_startup_objects()
        try:
            yield {"gateway": GatewayState(settings, broker, auth, usage, sessions, metrics)}
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await broker.close()
            await usage.close()
            await engine.dispose()
            tracing.flush()

    routes = [
        Route(f"{prefix}/chat/completions", chat_completions, methods=["POST"]) for prefix in ("/v1", "/v1.0")
    ] + [Route("/v1.0/chat/abort", abort, methods=["POST"]), Route("/v1/usage", usage_api.usage, methods=["GET"]),
         Route("/v1/embeddings", endpoints.embeddings, methods=["POST"]),
         Route("/v1/completions", endpoints.completions, methods=["POST"]),
         Route("/v1/responses", responses_api.create_response, methods=["POST"]),
         Route("/v1/responses/{response_id}", responses_api.retrieve_response, methods=["GET"]),
         Route("/v1/responses/{response_id}", responses_api.delete_response, methods=["DELETE"]),
         Route("/v1/responses/{response_id}/input_items", responses_api.list_input_items, methods=["GET"])] + [
        route
        for prefix in ("/v1", "/v1.0")
        for route in (Route(f"{prefix}/models", list_models, methods=["GET"]),
                      Route(f"{prefix}/models/{{model:path}}", retrieve_model, methods=["GET"]))
    ] + [Route("/api/user/read/models", kuwa_api.read_models, methods=["GET"]),
         Route("/api/user/read/bots", kuwa_api.read_bots, methods=["GET"]),
         Route("/api/user/create/bot", kuwa_api.create_bot, methods=["POST"]),
         Route("/api/user/{rest:path}", kuwa_api.not_here, methods=["GET", "POST", "PUT", "DELETE"]),
    ] + [Route(f"/{name}", endpoint, methods=["GET"])
         for name, endpoint in (("healthz", healthz), ("readyz", readyz), ("metrics", operational.metrics))]
    middleware = [Middleware(AccessLog, metrics=metrics),
                  Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                             allow_methods=["GET", "POST", "DELETE"], allow_headers=["authorization", "content-type"],
                             max_age=600)]
    if tracing.enabled():  # only then: an untraced gateway does not pay for the middleware
        middleware.insert(0, Middleware(TraceRequests))
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            ModelPortError: errors.modelport_error,
            HTTPException: errors.http_error,
            Exception: errors.unexpected_error,
        },
    )


def _recorded(outcome: Outcome, metrics: GatewayMetrics, broker: GatewayBroker) -> None:
    """A request has ended: time it, and settle its rate-limit and budget reservations to the tokens it used
    and what they cost."""
    metrics.observe(outcome)
    if outcome.admission is not None:
        broker.limits.settle_soon(outcome.admission, outcome.prompt_tokens + outcome.completion_tokens,
                                  cost=outcome.cost)


async def _follow_invalidations(broker: GatewayBroker, auth: Authenticator,
                                sessions: async_sessionmaker[AsyncSession], metrics: GatewayMetrics) -> None:
    """Drop the auth cache on every announced change; on (re)connecting to Redis, which may have restarted
    empty, also restore the LLM registrations workers start from."""
    async for reconnected in broker.announcements.changes():
        auth.invalidate()
        if not reconnected:
            metrics.announcements.inc()
            continue
        try:
            async with sessions() as session:
                await broker.restore_registrations(await queries.registrations(session))
        except (SQLAlchemyError, OSError, *QUEUE_ERRORS):
            log.warning("could not restore the LLM registrations in Redis; the next announced change will")


def app_from_environment() -> Starlette:
    """The factory uvicorn's worker processes call (``modelport gateway --workers N``)."""
    settings = GatewaySettings()
    configure_logging(settings.log_level)
    tracing.configure("modelport-gateway")
    return create_app(settings)

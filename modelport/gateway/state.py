"""What the gateway's endpoints share, built once in the lifespan and handed over in request state."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.broker.gateway import GatewayBroker
from modelport.gateway.auth import Authenticator
from modelport.gateway.metrics import GatewayMetrics
from modelport.gateway.settings import GatewaySettings
from modelport.gateway.usage import UsageWriter


@dataclass(frozen=True)
class GatewayState:
    settings: GatewaySettings
    broker: GatewayBroker
    auth: Authenticator
    usage: UsageWriter
    sessions: async_sessionmaker[AsyncSession]
    metrics: GatewayMetrics

"""The worker process's settings (``MODELPORT_*``), validated once at start."""

from __future__ import annotations

from pydantic import Field

from modelport.settings import CommonSettings


class WorkerSettings(CommonSettings):
    heartbeat_s: float = Field(default=1.0, gt=0)
    lease_ms: int = Field(default=3000, ge=500)
    max_attempts: int = Field(default=3, ge=1)
    drain_s: float = Field(default=30.0, ge=0)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

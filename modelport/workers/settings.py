"""The worker process's settings (``MODELPORT_*``), validated once at start."""

from __future__ import annotations

from pydantic import Field, model_validator

from modelport.settings import CommonSettings


class WorkerSettings(CommonSettings):
    heartbeat_s: float = Field(default=1.0, gt=0)
    lease_ms: int = Field(default=3000, ge=500)
    max_attempts: int = Field(default=3, ge=1)
    drain_s: float = Field(default=30.0, ge=0)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    @model_validator(mode="after")
    def leases_outlive_heartbeats(self) -> WorkerSettings:
        """A lease must survive a missed heartbeat, or every job is taken over while its worker is healthy."""
        if self.heartbeat_s * 2 * 1000 >= self.lease_ms:
            raise ValueError(f"MODELPORT_LEASE_MS ({self.lease_ms}) must exceed twice MODELPORT_HEARTBEAT_S "
                             f"({self.heartbeat_s:g} s = {self.heartbeat_s * 1000:g} ms): a worker renews its "
                             "leases once a heartbeat, so a shorter lease expires under a healthy worker")
        return self

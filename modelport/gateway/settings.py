"""The gateway process's settings (``MODELPORT_*``), validated once at start and passed down."""

from __future__ import annotations

from pydantic import Field

from modelport.settings import CommonSettings


class GatewaySettings(CommonSettings):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    body_timeout_s: float = Field(default=30.0, gt=0)
    job_timeout_s: float = Field(default=600.0, gt=0)
    # What a gateway holds for a request (concurrency slots, in-flight entries, places in queue shares) is
    # renewed every third of this; if the gateway dies, all of it is free again within this.
    gateway_lease_s: float = Field(default=15.0, ge=1)
    auth_cache_ttl_s: float = Field(default=30.0, gt=0)
    usage_flush_s: float = Field(default=1.0, gt=0)
    cancel_settle_s: float = Field(default=5.0, gt=0)
    cors_origins: list[str] = Field(default_factory=list)
    forwarded_allow_ips: str = "127.0.0.1"
    workers: int = Field(default=1, ge=1)
    # On SIGTERM a gateway stops accepting connections and gives the requests in flight this long to end.
    gateway_drain_s: float = Field(default=10.0, ge=0)
    completion_reserve: int = Field(default=512, ge=1)
    # The part of a model's queue (its max_queue) one user's unfinished requests may fill.
    queue_user_share: float = Field(default=0.5, gt=0, le=1)
    # The part of a model's queue the members of one group (the group giving them their priority) may fill.
    queue_group_share: float = Field(default=0.8, gt=0, le=1)
    # How long a stored Responses API response (``store``, true unless the client says otherwise) is kept for
    # ``GET /v1/responses/{id}`` and ``previous_response_id``; OpenAI keeps them 30 days.
    responses_ttl_s: int = Field(default=30 * 86_400, ge=60)

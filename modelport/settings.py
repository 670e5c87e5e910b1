"""Settings every ModelPort process shares, read once from ``MODELPORT_*`` environment variables."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelport.protocol.connection import RedisTarget
from modelport.workers.backends.upstream_policy import UpstreamPolicy

DEFAULT_DATABASE_URL = "sqlite:///.modelport/modelport.db"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPORT_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    # A Sentinel-managed primary: the Sentinels (host:port,host:port,…) and the name they know it by; the
    # URL then gives only the user, password, database and TLS options.
    redis_sentinels: str = ""
    redis_sentinel_service: str = Field(default="mymaster", min_length=1)
    # A Redis Cluster: the URL names any of its nodes, the clients discover the rest and follow failovers.
    redis_cluster: bool = False
    log_level: str = "INFO"
    # Environment variables an LLM's config may name as its upstream key (names or glob patterns; never
    # MODELPORT_* settings), and the hosts its base_url may name (empty: any).
    upstream_key_envs: list[str] = ["*_API_KEY"]
    upstream_hosts: list[str] = []
    # Prices, costs and budgets are in this currency (a label: ModelPort converts nothing); budgets' days and
    # months are those of this time zone.
    currency: str = Field(default="USD", min_length=1, max_length=8)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{value}' (an IANA name such as Europe/Berlin)") from None
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def sentinel_addresses(cls, value: str) -> str:
        sentinel_list(value)
        return value

    @model_validator(mode="after")
    def one_redis_topology(self) -> CommonSettings:
        if self.redis_cluster and sentinel_list(self.redis_sentinels):
            raise ValueError("MODELPORT_REDIS_CLUSTER and MODELPORT_REDIS_SENTINELS exclude each other: a Redis "
                             "Cluster fails over by itself")
        return self

    def redis_target(self) -> RedisTarget:
        """Where this process finds Redis: the URL, and the Sentinels when a Sentinel-managed primary serves it."""
        return RedisTarget(self.redis_url, sentinel_list(self.redis_sentinels), self.redis_sentinel_service,
                           self.redis_cluster)

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def upstream_policy(self) -> UpstreamPolicy:
        return UpstreamPolicy(key_envs=tuple(self.upstream_key_envs), hosts=tuple(self.upstream_hosts))


def sentinel_list(value: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port,…`` as addresses (empty parts ignored); a ValueError naming a malformed one."""
    addresses = []
    for address in filter(None, (part.strip() for part in value.split(","))):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"'{address}' is not host:port (MODELPORT_REDIS_SENTINELS is host:port,host:port,…)")
        addresses.append((host, int(port)))
    return tuple(addresses)

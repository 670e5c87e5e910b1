"""Settings every ModelPort process shares, read once from ``MODELPORT_*`` environment variables."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelport.workers.backends.upstream_policy import UpstreamPolicy

DEFAULT_DATABASE_URL = "sqlite:///.modelport/modelport.db"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPORT_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
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

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def upstream_policy(self) -> UpstreamPolicy:
        return UpstreamPolicy(key_envs=tuple(self.upstream_key_envs), hosts=tuple(self.upstream_hosts))

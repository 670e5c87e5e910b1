"""The gemini backend's config, importable without google-genai (for registering models)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class GeminiConfig(BaseModel):
    upstream_model: str
    api_key_env: str = "GEMINI_API_KEY"
    base_url: str | None = None
    api_version: str | None = None
    timeout_s: float = Field(default=600.0, gt=0)
    concurrency: int = Field(default=256, ge=1)

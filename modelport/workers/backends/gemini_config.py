"""The gemini backend's config, importable without google-genai (for registering models)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class GeminiConfig(BaseModel):
    upstream_model: str = Field(description="The Gemini model (gemini-2.0-flash, …).")
    api_key_env: str = Field(default="GEMINI_API_KEY", description="The worker's environment variable holding the "
                             "API key (one MODELPORT_UPSTREAM_KEY_ENVS allows).")
    base_url: str | None = Field(default=None, description="Another endpoint than Google's (a proxy); empty: "
                                 "Google's.")
    api_version: str | None = Field(default=None, description="The API version (v1, v1beta); empty: the SDK's.")
    timeout_s: float = Field(default=600.0, gt=0, description="Seconds a whole answer may take.")
    concurrency: int = Field(default=256, ge=1, description="Requests one worker sends at once.")

"""The llamacpp backend's config, importable without llama-cpp-python (for registering models)."""

from __future__ import annotations

from pydantic import BaseModel, Field

BUNDLED = "bundled:gemma3-270m"


class LlamaCppConfig(BaseModel):
    model_path: str = BUNDLED
    chat_template: str | None = None
    stop: list[str] = Field(default_factory=list)
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int | None = Field(default=None, ge=1)
    n_gpu_layers: int = Field(default=0, ge=-1)

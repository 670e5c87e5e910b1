"""The llamacpp backend's config, importable without llama-cpp-python (for registering models)."""

from __future__ import annotations

from pydantic import BaseModel, Field

BUNDLED = "bundled:gemma3-270m"


class LlamaCppConfig(BaseModel):
    model_path: str = Field(default=BUNDLED, description="A GGUF file on the worker's host (default: the bundled "
                            "Gemma 3 270M).")
    chat_template: str | None = Field(default=None, description="A Jinja chat template; empty: the one in the GGUF.")
    stop: list[str] = Field(default_factory=list, description="Texts that end an answer, comma-separated.")
    n_ctx: int = Field(default=4096, ge=256, description="Context window in tokens (prompt and answer).")
    n_threads: int | None = Field(default=None, ge=1, description="CPU threads; empty: llama.cpp's choice.")
    n_gpu_layers: int = Field(default=0, ge=-1, description="Layers offloaded to the GPU (-1: all).")

"""Backend names, their config schemas (validated before an LLM is saved) and their constructors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from modelport.protocol.errors import InvalidRequest
from modelport.workers.backends.base import Backend
from modelport.workers.backends.fake import FakeBackend, FakeConfig
from modelport.workers.backends.gemini_config import GeminiConfig
from modelport.workers.backends.llamacpp_config import LlamaCppConfig
from modelport.workers.backends.openai_compat import OpenAICompatBackend, OpenAICompatConfig
from modelport.workers.backends.upstream_policy import UpstreamPolicy

CONFIGS: dict[str, type[BaseModel]] = {"fake": FakeConfig, "openai_compat": OpenAICompatConfig,
                                       "llamacpp": LlamaCppConfig, "gemini": GeminiConfig}


def validate_config(backend: str, config: dict[str, Any], policy: UpstreamPolicy) -> dict[str, Any]:
    """The normalised config, or a 400 naming the first bad field or what the upstream policy refuses."""
    schema = CONFIGS.get(backend)
    if schema is None:
        raise InvalidRequest(f"Unknown backend '{backend}'; choose one of {', '.join(sorted(CONFIGS))}.",
                             param="backend")
    try:
        normalised = schema.model_validate(config).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"Invalid {backend} config '{field}': {first['msg']}.", param=field) from None
    policy.check(normalised)
    return normalised


def build_backend(backend: str, config: dict[str, Any], policy: UpstreamPolicy, kind: str = "chat") -> Backend:
    """The backend for a registration, refused (400) when this host's policy would not accept its config;
    an LLM of ``kind`` embedding loads a local model to embed (the other backends do either on demand)."""
    policy.check(config)
    if backend == "fake":
        return FakeBackend(FakeConfig.model_validate(config))
    if backend == "openai_compat":
        return OpenAICompatBackend(OpenAICompatConfig.model_validate(config))
    if backend == "llamacpp":
        from modelport.workers.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(LlamaCppConfig.model_validate(config), embedding=kind == "embedding")
    if backend == "gemini":
        from modelport.workers.backends.gemini import GeminiBackend

        return GeminiBackend(GeminiConfig.model_validate(config))
    raise InvalidRequest(f"Unknown backend '{backend}'.", param="backend")

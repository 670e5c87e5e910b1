"""Google Gemini through the maintained google-genai SDK: chats streamed, embeddings in one call; endpoint
overridable (Vertex or a proxy), API key from the environment variable the LLM's config names."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any, cast

from google import genai
from google.genai import errors, types

from modelport.protocol.envelope import ChoiceDelta, Delta, GenerationParams, Usage
from modelport.protocol.errors import InvalidRequest, ModelPortError, UpstreamError
from modelport.protocol.vectors import pack
from modelport.workers.backends.base import Embedded
from modelport.workers.backends.gemini_config import GeminiConfig
from modelport.workers.backends.gemini_messages import contents_and_config
from modelport.workers.backends.openai_compat import upstream_error

log = logging.getLogger(__name__)
FILTERED = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY"}
FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}


class GeminiBackend:
    def __init__(self, config: GeminiConfig) -> None:
        self.config = config
        self.concurrency = config.concurrency
        self._client: genai.Client | None = None

    async def start(self) -> None:
        key = os.environ.get(self.config.api_key_env, "")
        if not key:
            raise RuntimeError(f"environment variable {self.config.api_key_env} (the Gemini key) is not set")
        options = types.HttpOptions(base_url=self.config.base_url, api_version=self.config.api_version,
                                    timeout=int(self.config.timeout_s * 1000),
                                    retry_options=types.HttpRetryOptions(attempts=1))
        self._client = genai.Client(api_key=key, http_options=options)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aio.aclose()

    async def stream(self, params: GenerationParams) -> AsyncIterator[Delta | Usage]:
        assert self._client is not None, "start() first"
        if params.task != "chat":
            raise InvalidRequest("Gemini models serve chats, not legacy completions: use /v1/chat/completions.",
                                 param="model")
        contents, config = contents_and_config(params)
        usage: Usage | None = None
        try:
            chunks = await self._client.aio.models.generate_content_stream(
                model=self.config.upstream_model, contents=contents, config=config)
            async for chunk in chunks:
                delta = _delta(chunk)
                if delta is not None:
                    yield delta
                if chunk.usage_metadata is not None:
                    usage = Usage(prompt_tokens=chunk.usage_metadata.prompt_token_count or 0,
                                  completion_tokens=chunk.usage_metadata.candidates_token_count or 0)
        except errors.APIError as exc:
            raise gemini_error(exc) from None
        if usage is not None:
            yield usage

    async def embed(self, params: GenerationParams) -> Embedded:
        """``embed_content`` for every input at once; Gemini's API does not count what it embedded, so its
        ``count_tokens`` does, at the same time."""
        assert self._client is not None, "start() first"
        texts = [item for item in params.input or [] if isinstance(item, str)]
        if len(texts) != len(params.input or []):
            raise InvalidRequest("Gemini embeds texts, not token arrays.", param="input")
        models = self._client.aio.models
        config = types.EmbedContentConfig(output_dimensionality=params.dimensions)
        try:
            embedded, counted = await asyncio.gather(
                models.embed_content(model=self.config.upstream_model, contents=cast(Any, texts), config=config),
                models.count_tokens(model=self.config.upstream_model, contents=cast(Any, texts)))
        except errors.APIError as exc:
            raise gemini_error(exc) from None
        vectors = [pack(embedding.values or []) for embedding in embedded.embeddings or []]
        if len(vectors) != len(texts):
            raise UpstreamError(f"Gemini sent {len(vectors)} embeddings for {len(texts)} inputs.")
        return Embedded(vectors, Usage(prompt_tokens=counted.total_tokens or 0))


def _delta(chunk: types.GenerateContentResponse) -> Delta | None:
    if chunk.prompt_feedback is not None and chunk.prompt_feedback.block_reason is not None:
        return Delta(choices=[ChoiceDelta(content="", finish_reason="content_filter")])
    if not chunk.candidates:
        return None
    candidate = chunk.candidates[0]
    text = "".join(part.text or "" for part in (candidate.content.parts or []) if not part.thought) \
        if candidate.content is not None else ""
    reason = candidate.finish_reason.name if candidate.finish_reason is not None else None
    finish = None if reason is None else "content_filter" if reason in FILTERED else FINISH.get(reason, "stop")
    if not text and finish is None:
        return None
    return Delta(choices=[ChoiceDelta(content=text, finish_reason=finish)])


def gemini_error(exc: errors.APIError) -> ModelPortError:
    message = exc.message or str(exc)
    if exc.code == 400 and "api key" in message.lower():
        return upstream_error(401, message)
    if exc.code:
        return upstream_error(exc.code, message)
    log.warning("Gemini failed: %.500s", message)
    return UpstreamError("The Gemini upstream failed.")

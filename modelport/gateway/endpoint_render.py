"""The answers of the endpoints beside chat that run as jobs: an embeddings list, and legacy
``text_completion`` objects (one body, or streamed chunks)."""

from __future__ import annotations

from typing import Any

import orjson

from modelport.gateway.render import BodyBuilder, ChunkRenderer, usage_dict
from modelport.protocol.envelope import ChoiceDelta, Done
from modelport.protocol.vectors import unpack


class EmbeddingsBuilder(BodyBuilder):
    """``{"object": "list", "data": [embedding, ...]}``, each vector as floats or as the base64 it travels in."""

    def __init__(self, model: str, encoding_format: str) -> None:
        super().__init__()
        self._model, self._base64 = model, encoding_format == "base64"

    def body(self, done: Done) -> bytes:
        data = [{"object": "embedding", "index": index, "embedding": packed if self._base64 else unpack(packed)}
                for index, packed in enumerate(done.embeddings or [])]
        prompt = done.usage.prompt_tokens if done.usage else 0
        return orjson.dumps({"object": "list", "data": data, "model": self._model,
                             "usage": {"prompt_tokens": prompt, "total_tokens": prompt}})


class TextCompletionBuilder(BodyBuilder):
    """One ``text_completion`` body: each choice's whole text."""

    def __init__(self, job_id: str, model: str, created: int) -> None:
        super().__init__()
        self._head = {"id": job_id, "object": "text_completion", "created": created, "model": model}

    def body(self, done: Done) -> bytes:
        choices = [_choice(choice, choice.finish_reason or "stop") for _, choice in sorted(self.choices.items())]
        return orjson.dumps({**self._head, "choices": choices, "usage": usage_dict(done.usage)})


class TextCompletionRenderer(ChunkRenderer):
    """Streamed ``text_completion`` chunks (the same shape as the body, a choice's text so far in each), then
    with ``include_usage`` a last chunk with no choices and the usage, then ``[DONE]``."""

    object = "text_completion"
    pending_usage = b"}"  # typed as an object there, so absent until the last chunk

    def _choice(self, choice: ChoiceDelta) -> dict[str, Any]:
        return _choice(choice, choice.finish_reason)


def _choice(choice: ChoiceDelta, finish_reason: str | None) -> dict[str, Any]:
    return {"text": choice.content or "", "index": choice.index, "logprobs": None, "finish_reason": finish_reason}

"""A deterministic backend for tests and benchmarks: replies with a fixed or echoed text, word by word."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic import BaseModel, Field

from modelport.protocol.envelope import ChoiceDelta, Delta, GenerationParams, Usage
from modelport.protocol.errors import InvalidRequest


class FakeConfig(BaseModel):
    reply: str = Field(default="Hello from the fake model. 你好，世界！", description="The answer, sent word by word.")
    echo: bool = Field(default=False, description="Answer with the last user message instead.")
    delay_ms: float = Field(default=0.0, ge=0, description="Milliseconds between words.")
    first_delay_ms: float = Field(default=0.0, ge=0, description="Milliseconds before the first word.")
    chunks: int | None = Field(default=None, ge=1, description="Send this many words (the reply's, repeated).")
    concurrency: int = Field(default=64, ge=1, description="Requests one worker answers at once.")


class FakeBackend:
    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.concurrency = config.concurrency

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def pieces(self, params: GenerationParams) -> list[str]:
        text = _last_user_text(params) if self.config.echo else self.config.reply
        words = [word + " " for word in text.split(" ")]
        words[-1] = words[-1].rstrip(" ")
        if self.config.chunks is not None:
            words = [words[i % len(words)] for i in range(self.config.chunks)]
        return words[:params.completion_limit] if params.completion_limit else words

    async def stream(self, params: GenerationParams) -> AsyncIterator[Delta | Usage]:
        if "" in params.stops:
            raise InvalidRequest("Stop sequences must not be empty.", param="stop")
        pieces = self.pieces(params)
        truncated = len(pieces) < len(self.pieces(GenerationParams(messages=params.messages)))
        for count in range(params.choices):
            if self.config.first_delay_ms:
                await asyncio.sleep(self.config.first_delay_ms / 1000)
            for position, piece in enumerate(pieces):
                last = position == len(pieces) - 1
                finish = ("length" if truncated else "stop") if last else None
                yield Delta(choices=[ChoiceDelta(index=count, content=piece, finish_reason=finish)])
                if self.config.delay_ms and not last:
                    await asyncio.sleep(self.config.delay_ms / 1000)
        prompt = sum(len(str(message.get("content") or "").split()) for message in params.messages)
        yield Usage(prompt_tokens=prompt, completion_tokens=len(pieces) * params.choices)


def _last_user_text(params: GenerationParams) -> str:
    for message in reversed(params.messages):
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str) and content:
            return content
    return "(nothing to echo)"

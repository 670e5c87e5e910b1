"""A deterministic backend for tests and benchmarks: replies with a fixed or echoed text, word by word (chats
and completions), and embeds each text as a vector drawn from its hash."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from pydantic import BaseModel, Field

from modelport.protocol.envelope import ChoiceDelta, Delta, GenerationParams, Usage
from modelport.protocol.errors import InvalidRequest
from modelport.protocol.vectors import pack, unit
from modelport.workers.backends.base import Embedded


class FakeConfig(BaseModel):
    reply: str = Field(default="Hello from the fake model. 你好，世界！", description="The answer, sent word by word.")
    echo: bool = Field(default=False, description="Answer with the last user message instead.")
    delay_ms: float = Field(default=0.0, ge=0, description="Milliseconds between words.")
    first_delay_ms: float = Field(default=0.0, ge=0, description="Milliseconds before the first word.")
    chunks: int | None = Field(default=None, ge=1, description="Send this many words (the reply's, repeated).")
    concurrency: int = Field(default=64, ge=1, description="Requests one worker answers at once.")
    dimensions: int = Field(default=8, ge=1, le=4096, description="Length of the embeddings it makes up.")


class FakeBackend:
    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.concurrency = config.concurrency

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def pieces(self, params: GenerationParams, prompt: str | None = None) -> list[str]:
        """The answer's words: the configured reply, or what it echoes (``prompt``, for a completion)."""
        if self.config.echo:
            text = _last_user_text(params) if prompt is None else prompt or "(nothing to echo)"
        else:
            text = self.config.reply
        words = [word + " " for word in text.split(" ")]
        words[-1] = words[-1].rstrip(" ")
        if self.config.chunks is not None:
            words = [words[i % len(words)] for i in range(self.config.chunks)]
        return words[:params.completion_limit] if params.completion_limit else words

    async def stream(self, params: GenerationParams) -> AsyncIterator[Delta | Usage]:
        if "" in params.stops:
            raise InvalidRequest("Stop sequences must not be empty.", param="stop")
        if params.suffix is not None:
            raise InvalidRequest("The fake backend does not take a suffix.", param="suffix")
        prompts = [None] if params.task == "chat" else [_text(prompt) for prompt in params.prompts]
        produced = 0
        for number, prompt in enumerate(prompts):
            pieces = self.pieces(params, prompt)
            whole = self.pieces(GenerationParams(messages=params.messages), prompt)
            finish = "length" if len(pieces) < len(whole) else "stop"
            for count in range(params.choices):
                index = number * params.choices + count
                if self.config.first_delay_ms:
                    await asyncio.sleep(self.config.first_delay_ms / 1000)
                if params.echo and prompt:
                    yield Delta(choices=[ChoiceDelta(index=index, content=prompt)])
                for position, piece in enumerate(pieces):
                    last = position == len(pieces) - 1
                    yield Delta(choices=[ChoiceDelta(index=index, content=piece,
                                                     finish_reason=finish if last else None)])
                    if self.config.delay_ms and not last:
                        await asyncio.sleep(self.config.delay_ms / 1000)
                produced += len(pieces)
        read = [_content_text(message.get("content")) for message in params.messages] + [text or "" for text in prompts]
        yield Usage(prompt_tokens=sum(len(text.split()) for text in read), completion_tokens=produced)

    async def embed(self, params: GenerationParams) -> Embedded:
        """A unit vector per input drawn from its text's hash: equal texts, equal vectors."""
        texts = [_text(item) for item in params.input or []]
        size = params.dimensions or self.config.dimensions
        vectors = [pack(_hashed_vector(text, size)) for text in texts]
        return Embedded(vectors, Usage(prompt_tokens=sum(max(1, len(text.split())) for text in texts)))


def _content_text(content: object) -> str:
    """A message's text: its string, or its text parts' joined."""
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")


def _text(prompt: str | list[int]) -> str:
    """A prompt or input as text (token arrays as their numbers)."""
    return prompt if isinstance(prompt, str) else " ".join(str(token) for token in prompt)


def _hashed_vector(text: str, size: int) -> list[float]:
    stream = b"".join(hashlib.sha256(f"{text}\0{block}".encode()).digest() for block in range(size // 32 + 1))
    return unit([byte / 127.5 - 1 for byte in stream[:size]])


def _last_user_text(params: GenerationParams) -> str:
    for message in reversed(params.messages):
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str) and content:
            return content
    return "(nothing to echo)"

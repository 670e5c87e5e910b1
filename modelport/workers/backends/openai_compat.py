"""Any OpenAI-compatible upstream (OpenAI, vLLM, Ollama, llama.cpp's server) over aiohttp: chats and legacy
completions streamed, embeddings in one answer.

Measured on this machine, the official SDK (even on its aiohttp transport) took 1.5 ms to a first
chunk that raw aiohttp gets in 0.7 ms, and ModelPort's budget for everything it adds is 2 ms; so the
request is one POST of the client's own parameters and the SSE lines are parsed here with orjson.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from pydantic import BaseModel, Field

from modelport import tracing
from modelport.protocol.envelope import ChoiceDelta, Delta, GenerationParams, ToolCallFragment, Usage
from modelport.protocol.errors import (
    ContextLengthExceeded,
    DeadlineExceeded,
    InvalidRequest,
    ModelPortError,
    RateLimited,
    UpstreamError,
)
from modelport.protocol.vectors import pack
from modelport.workers.backends.base import Embedded

log = logging.getLogger(__name__)
MAX_LINE = 2**20  # bytes of one SSE line (one chunk's JSON): aiohttp's read buffer


class OpenAICompatConfig(BaseModel):
    base_url: str = Field(description="The upstream's API root, ending in /v1 (https://api.openai.com/v1, a vLLM or "
                          "Ollama server's).")
    upstream_model: str = Field(description="The model name the upstream knows (gpt-4o-mini, meta-llama/…).")
    api_key_env: str | None = Field(default=None, description="The worker's environment variable holding the API "
                                    "key (one MODELPORT_UPSTREAM_KEY_ENVS allows); empty: no key.")
    timeout_s: float = Field(default=600.0, gt=0, description="Seconds a whole answer may take.")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="Seconds to connect to the upstream.")
    concurrency: int = Field(default=256, ge=1, description="Requests one worker sends the upstream at once.")
    # Request fields beyond OpenAI's that clients may pass on to this upstream (vLLM's ``top_k``, say; an
    # operator's choice); the OpenAI parameters always go, anything else a client sends is dropped.
    extra_params: list[str] = Field(default_factory=list, max_length=64, description="Request fields beyond "
                                    "OpenAI's that clients may pass on (top_k, say), comma-separated.")


class OpenAICompatBackend:
    def __init__(self, config: OpenAICompatConfig) -> None:
        self.config = config
        self.concurrency = config.concurrency
        root = config.base_url.rstrip("/")
        self._urls = {"chat": root + "/chat/completions", "completion": root + "/completions",
                      "embedding": root + "/embeddings"}
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        self._session: aiohttp.ClientSession | None = None
        self._extra_params = frozenset(config.extra_params)

    async def start(self) -> None:
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env, "")
            if not key:
                raise RuntimeError(f"environment variable {self.config.api_key_env} (the upstream key) is not set")
            self._headers["Authorization"] = f"Bearer {key}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout_s,
                                        sock_read=self.config.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, read_bufsize=2**20,
                                              connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _body(self, params: GenerationParams, **fields: Any) -> bytes:
        extra = {name: value for name, value in params.extra.items() if name in self._extra_params}
        return orjson.dumps({**extra, **params.openai_fields(), "model": self.config.upstream_model, **fields})

    async def stream(self, params: GenerationParams) -> AsyncIterator[Delta | Usage]:
        assert self._session is not None, "start() first"
        url = self._urls[params.task]
        body = self._body(params, stream=True, stream_options={"include_usage": True})
        try:
            headers = tracing.with_trace_headers(self._headers)
            async with self._session.post(url, data=body, headers=headers) as response:
                if response.status >= 400:
                    raise upstream_error(response.status, _message(await response.read()))
                async for events in _events(response.content):
                    for event in events:
                        yield event
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise DeadlineExceeded("The upstream model did not answer in time.", code="upstream_timeout") from None
        except aiohttp.ClientError as exc:
            raise unreachable(url, exc) from None

    async def embed(self, params: GenerationParams) -> Embedded:
        """The upstream's ``/embeddings``, asked for base64 (passed on as it comes: nothing decoded here)."""
        assert self._session is not None, "start() first"
        url = self._urls["embedding"]
        try:
            async with self._session.post(url, data=self._body(params, encoding_format="base64"),
                                          headers=tracing.with_trace_headers(self._headers)) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise upstream_error(response.status, _message(raw))
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise DeadlineExceeded("The upstream model did not answer in time.", code="upstream_timeout") from None
        except aiohttp.ClientError as exc:
            raise unreachable(url, exc) from None
        return _embedded(raw, len(params.input or []))


def unreachable(url: str, exc: aiohttp.ClientError) -> UpstreamError:
    log.warning("could not reach the upstream at %s: %s", url, exc)
    return UpstreamError("Could not reach the upstream model.", code="upstream_unreachable")


def _embedded(raw: bytes, inputs: int) -> Embedded:
    """An ``/embeddings`` answer's vectors in input order (base64, or floats from an upstream that ignores
    ``encoding_format``), checked to be one per input."""
    try:
        answer = orjson.loads(raw)
        rows = sorted(answer["data"], key=lambda row: row["index"])
        vectors = [row["embedding"] if isinstance(row["embedding"], str) else pack(row["embedding"]) for row in rows]
        usage = answer.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("the upstream's embeddings answer is not OpenAI's: %.500r", raw)
        raise UpstreamError("The upstream model sent an embeddings answer that is not OpenAI's.") from None
    if len(vectors) != inputs:
        raise UpstreamError(f"The upstream model sent {len(vectors)} embeddings for {inputs} inputs.")
    return Embedded(vectors, Usage(prompt_tokens=prompt_tokens))


async def _events(body: aiohttp.StreamReader) -> AsyncIterator[list[Delta | Usage]]:
    """The stream's events as they arrive, read by what the network delivers rather than line by line: the
    deltas of one read are merged into one (their ``pieces`` counted), which spares the worker and Redis a
    step per chunk when a fast upstream sends many at once, and sends each as soon as it is read."""
    buffer = b""
    async for data in body.iter_any():
        lines = (buffer + data).split(b"\n")
        buffer = lines.pop()
        if len(buffer) > MAX_LINE:
            raise UpstreamError(f"The upstream model sent a line longer than {MAX_LINE} bytes.")
        if events := _Read.of(lines):
            yield events
    if buffer and (events := _Read.of([buffer])):
        yield events


class _Read:
    """The events of one network read: consecutive chunks' choices are merged as they are parsed (text pieces
    joined once, one Delta made per run of chunks), not a Delta made and absorbed per chunk."""

    @classmethod
    def of(cls, lines: list[bytes]) -> list[Delta | Usage]:
        read = cls()
        for line in lines:
            read.add(line)
        read.done()
        return read.events

    def __init__(self) -> None:
        self.events: list[Delta | Usage] = []
        self._choices: dict[int, tuple[list[str], list[ToolCallFragment], list[str]]] = {}
        self._pieces = 0

    def add(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if payload == b"[DONE]" or not payload:
            return
        chunk = orjson.loads(payload)
        if "error" in chunk:
            log.warning("the upstream failed mid-stream: %.500s", chunk["error"])
            raise UpstreamError("The upstream model failed mid-stream.")
        choices = chunk.get("choices")
        if choices:
            self._pieces += 1
            for choice in choices:
                self._add_choice(choice)
            return
        usage = chunk.get("usage")
        if usage:
            self.done()
            self.events.append(Usage(prompt_tokens=usage.get("prompt_tokens") or 0,
                                     completion_tokens=usage.get("completion_tokens") or 0))

    def _add_choice(self, choice: dict[str, Any]) -> None:
        """A chat chunk's choice (its ``delta``), or a legacy completion chunk's (its ``text``)."""
        texts, calls, finish = self._choices.setdefault(choice.get("index", 0), ([], [], []))
        delta = choice.get("delta") or {}
        text = choice["text"] if "text" in choice else delta.get("content")
        if text is not None:
            texts.append(text)
        calls.extend(ToolCallFragment.model_validate(call) for call in delta.get("tool_calls") or ())
        if choice.get("finish_reason") is not None:
            finish.append(choice["finish_reason"])

    def done(self) -> None:
        """Close the run of chunks read so far into one Delta."""
        if self._pieces:
            merged = []
            for index, (texts, calls, finish) in self._choices.items():
                choice = ChoiceDelta(index=index, content="".join(texts) if texts else None,
                                     finish_reason=finish[-1] if finish else None)
                for fragment in calls:
                    choice.absorb(ChoiceDelta(index=index, tool_calls=[fragment]))
                merged.append(choice)
            self.events.append(Delta(choices=merged, pieces=self._pieces))
            self._choices, self._pieces = {}, 0


def _message(body: bytes) -> str:
    """The upstream's error message, from OpenAI's envelope when it sent one."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:500] or "no details"
    inner = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
    if isinstance(inner, dict) and inner.get("message"):
        return str(inner["message"])
    return str(inner)[:500]


def upstream_error(status: int, message: str) -> ModelPortError:
    """Map an upstream HTTP status to the error the client should see. The upstream's own text (which may
    name internal hosts or echo part of a key) goes to the worker's log, never to the client."""
    log.warning("the upstream answered HTTP %d: %.500s", status, message)
    if status == 429:
        return RateLimited("The upstream model is rate limited (HTTP 429); retry shortly.",
                           code="upstream_rate_limited", retry_after=5)
    if status in (401, 403):
        return UpstreamError(f"The upstream refused the worker's credentials (HTTP {status}).",
                             code="upstream_authentication_failed")
    if status in (400, 404, 413, 422):
        if "context" in message.lower() and "length" in message.lower():
            return ContextLengthExceeded(f"The messages exceed the model's context length (upstream HTTP {status}).")
        return InvalidRequest(f"The upstream model rejected the request (HTTP {status}).",
                              code="upstream_invalid_request")
    return UpstreamError(f"The upstream model failed (HTTP {status}).")

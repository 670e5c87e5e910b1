"""``/v1/embeddings`` and the legacy ``/v1/completions`` through a live gateway, Redis and real workers, with
the official openai SDK (and raw HTTP where the SDK would hide what is sent), checked against OpenAI's schemas."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.live import Live
from tests.openapi_schemas import problems
from tests.system import usage_records

FAKE_WORDS = ["Hello ", "from ", "the ", "fake ", "model. ", "你好，世界！"]


@pytest.fixture(autouse=True)
def clients() -> Iterator[list[openai.OpenAI]]:
    """The SDK clients a test made, closed after it (their sockets with them)."""
    made: list[openai.OpenAI] = []
    CLIENTS.append(made)
    yield made
    CLIENTS.remove(made)
    for sdk in made:
        sdk.close()


CLIENTS: list[list[openai.OpenAI]] = []


def client(live: Live, token: str | None = None) -> openai.OpenAI:
    sdk = openai.OpenAI(base_url=live.base + "/v1", api_key=token or live.token, max_retries=0)
    CLIENTS[-1].append(sdk)
    return sdk


def post(live: Live, path: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{live.base}/v1/{path}", headers={"Authorization": f"Bearer {live.token}"}, json=body,
                      timeout=30)


def test_sdk_embeds_one_text_in_base64_by_default_and_floats_when_asked(live: Live) -> None:
    raw = client(live).embeddings.with_raw_response.create(model="fake-embed", input="The food was delicious")
    answer = raw.parse()  # the SDK asked for base64 and decoded little-endian float32
    [row] = answer.data
    assert len(row.embedding) == 8 and math.isclose(math.fsum(v * v for v in row.embedding), 1, rel_tol=1e-5)
    assert answer.usage.prompt_tokens == 4 and answer.usage.total_tokens == 4 and answer.model == "fake-embed"
    floats = client(live).embeddings.create(model="fake-embed", input="The food was delicious",
                                            encoding_format="float")
    assert floats.data[0].embedding == row.embedding  # the same float32 values either way
    [record] = usage_records(live.system.database_url, raw.headers["x-request-id"])
    assert (record.endpoint, record.model, record.prompt_tokens, record.completion_tokens) == (
        "embeddings", "fake-embed", 4, 0)
    metrics = httpx.get(f"{live.base}/metrics").text
    assert 'modelport_requests_total{endpoint="embeddings",model="fake-embed",status="200"}' in metrics


def test_a_batch_is_one_job_in_input_order(live: Live) -> None:
    texts = ["one", "two words", "one"]
    raw = client(live).embeddings.with_raw_response.create(model="fake-embed", input=texts, dimensions=3)
    answer = raw.parse()
    assert [row.index for row in answer.data] == [0, 1, 2] and all(len(row.embedding) == 3 for row in answer.data)
    assert answer.data[0].embedding == answer.data[2].embedding != answer.data[1].embedding
    assert answer.usage.prompt_tokens == 4
    assert len(usage_records(live.system.database_url, raw.headers["x-request-id"])) == 1
    tokens = client(live).embeddings.create(model="fake-embed", input=[[1, 2, 3], [4]], encoding_format="float")
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 4


def test_an_openai_compatible_upstream_embeds_and_its_base64_passes_through(live: Live) -> None:
    answer = client(live).embeddings.create(model="oc-embed", input=["abc", "de"], dimensions=2)
    # the fake upstream answers (len(text) + position) / 100, out of order: rows come back by index
    assert [[round(value, 6) for value in row.embedding] for row in answer.data] == [[0.03, 0.04], [0.02, 0.03]]
    body = post(live, "embeddings", model="oc-embed", input="abc", encoding_format="base64").json()
    assert struct.unpack("<4f", base64.b64decode(body["data"][0]["embedding"]))[0] == pytest.approx(0.03)
    # OpenAI's schema types only the float form (its base64 answers are strings there too)
    assert problems("CreateEmbeddingResponse", post(live, "embeddings", model="oc-embed", input="x").json()) == []


def test_models_of_the_wrong_kind_are_400s_naming_the_model(live: Live) -> None:
    with pytest.raises(openai.BadRequestError) as chat:
        client(live).chat.completions.create(model="fake-embed", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as embedding:
        client(live).embeddings.create(model="fake", input="hi")
    with pytest.raises(openai.BadRequestError) as completion:
        client(live).completions.create(model="oc-embed", prompt="hi")
    for refused in (chat, embedding, completion):
        assert refused.value.code == "wrong_model_kind" and refused.value.param == "model"
    assert "fake-embed" in chat.value.message and "/v1/embeddings" in chat.value.message
    assert {"fake-embed", "oc-embed"} <= {model.id for model in client(live).models.list()}


def test_no_grant_and_bad_input_are_clear_errors(live: Live) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        client(live, live.other_token).embeddings.create(model="fake-embed", input="hi")
    refusals: list[tuple[dict[str, Any], str | None]] = [
        ({"input": []}, "input"), ({"input": ""}, "input"), ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"), ({"input": [[1, -2]]}, "input"),
        ({}, "input")]
    for body, param in refusals:
        answer = post(live, "embeddings", model="fake-embed", **body)
        assert answer.status_code == 400 and answer.json()["error"]["param"].startswith(param or "?"), answer.text
    refusals = [({"prompt": "x", "max_tokens": 0}, "max_tokens"), ({"prompt": "x", "best_of": 3}, None),
                ({"prompt": "x", "logprobs": 2}, None), ({"prompt": ["x"] * 20, "n": 10}, None),
                ({"prompt": 7}, "prompt"), ({"prompt": "x", "echo": "yes"}, "echo")]
    for body, param in refusals:
        answer = post(live, "completions", model="fake", **body)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, (body, answer.text)


def test_sdk_completes_a_prompt_without_streaming(live: Live) -> None:
    raw = client(live).completions.with_raw_response.create(model="fake", prompt="Say hello", max_tokens=3)
    answer = raw.parse()
    assert answer.object == "text_completion" and answer.model == "fake"
    assert [(choice.index, choice.text, choice.finish_reason) for choice in answer.choices] == [
        (0, "Hello from the ", "length")]
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2, 3)
    [record] = usage_records(live.system.database_url, raw.headers["x-request-id"])
    assert (record.endpoint, record.completion_tokens) == ("completions", 3)
    assert problems("CreateCompletionResponse", json.loads(raw.text)) == []


def test_sdk_streams_every_prompt_and_choice_with_echo(live: Live) -> None:
    stream = client(live).completions.create(model="fake", prompt=["A", "B"], n=2, echo=True, stream=True,
                                             stream_options={"include_usage": True})
    texts: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
        usage = chunk.usage or usage
    reply = "".join(FAKE_WORDS)
    assert texts == {0: "A" + reply, 1: "A" + reply, 2: "B" + reply, 3: "B" + reply}
    assert set(finishes.values()) == {"stop"}
    assert usage is not None and usage.completion_tokens == 4 * len(FAKE_WORDS) and usage.prompt_tokens == 2


def test_completions_reach_an_openai_compatible_upstream(live: Live) -> None:
    answer = client(live).completions.create(model="oc-params", prompt="def f(", max_tokens=7, temperature=0.2,
                                             stop=["\n"], suffix="return 1", echo=False)
    received = json.loads(answer.choices[0].text)
    assert received["prompt"] == ["def f("] and received["max_tokens"] == 7 and received["suffix"] == "return 1"
    assert received["temperature"] == 0.2 and received["stop"] == ["\n"] and "messages" not in received
    streamed = "".join(choice.text for chunk in client(live).completions.create(
        model="oc", prompt="x", stream=True) for choice in chunk.choices)
    assert streamed == "alpha beta gamma delta 你好 世界 alpha beta "


def test_completion_chunks_are_openais(live: Live) -> None:
    with httpx.stream("POST", f"{live.base}/v1/completions", headers={"Authorization": f"Bearer {live.token}"},
                      json={"model": "fake", "prompt": "hi", "stream": True,
                            "stream_options": {"include_usage": True}}, timeout=30) as answer:
        chunks = [json.loads(line[6:]) for line in answer.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    assert len(chunks) >= 2 and chunks[-1]["usage"]["total_tokens"] > 0
    # OpenAI's own stream, like this one, says finish_reason null until a choice ends, where its schema (shared
    # by bodies and chunks) types it as a string: the chunks are checked with that one field as a body has it.
    for chunk in chunks:
        for choice in chunk["choices"]:
            assert choice["finish_reason"] in (None, "stop", "length")
            choice["finish_reason"] = choice["finish_reason"] or "stop"
        assert problems("CreateCompletionResponse", chunk) == []

"""The public API end to end: the real openai SDK, curl-like clients and the Kuwa snippets against a live
gateway with real workers, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from tests.live import TOOLS, UPSTREAM_MODELS, Live
from tests.system import usage_records

FAKE_REPLY = "Hello from the fake model. 你好，世界！"


def client(live: Live, path: str = "/v1", token: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.base + path, api_key=token or live.token, max_retries=0)


def test_sdk_gets_a_non_streamed_answer_with_usage(live: Live) -> None:
    answer = client(live).chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == FAKE_REPLY
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 6 and answer.usage.prompt_tokens == 1
    assert answer.id.startswith("chatcmpl-")


def test_sdk_streams_with_usage_chunk(live: Live) -> None:
    stream = client(live).chat.completions.create(model="oc", messages=[{"role": "user", "content": "hi"}],
                                                  stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "alpha beta gamma delta 你好 世界 alpha beta "
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"


def test_sdk_streams_tool_calls(live: Live) -> None:
    stream = client(live).chat.completions.create(model="oc-tools", messages=[{"role": "user", "content": "w?"}],
                                                  tools=TOOLS, stream=True)
    arguments, names, finish = "", set(), None
    for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            assert call.function is not None and call.index == 0
            arguments += call.function.arguments or ""
            names |= {call.function.name} if call.function.name else set()
        finish = chunk.choices[0].finish_reason or finish
    assert json.loads(arguments) == {"city": "Taipei"}
    assert names == {"get_weather"} and finish == "tool_calls"


def test_sdk_gets_tool_calls_without_streaming(live: Live) -> None:
    answer = client(live).chat.completions.create(model="oc-tools", messages=[{"role": "user", "content": "w?"}],
                                                  tools=TOOLS)
    calls = answer.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.id == "call_1" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Taipei"}
    assert answer.choices[0].finish_reason == "tool_calls"


def test_kuwa_python_snippet_runs_unchanged(live: Live, tmp_path: Path) -> None:
    live.system.cli("llm", "add", "gemini-pro", "--backend", "fake")
    live.system.cli("group", "grant", "everything", "gemini-pro")
    live.system.worker("gemini-pro")
    snippet = (Path(__file__).parent / "kuwa" / "snippet.py.txt").read_text()
    script = tmp_path / "kuwa_client.py"
    script.write_text(snippet.replace("http://127.0.0.1/v1.0", f"{live.base}/v1.0")
                      .replace("YOUR_AUTH_TOKEN", live.token))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60, text=True,
                         encoding="utf-8")
    assert run.returncode == 0, run.stderr
    assert run.stdout == FAKE_REPLY


def test_kuwa_frames_are_literal(live: Live) -> None:
    with httpx.stream("POST", f"{live.base}/v1.0/chat/completions", headers={"Authorization": f"Bearer {live.token}"},
                      json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]}) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["x-accel-buffering"] == "no"
        raw = response.read()
    assert raw.isascii()
    frames = raw.decode().split("\n\n")
    assert frames[-2:] == ["event: close\ndata: [DONE]", ""]
    chunks = [json.loads(frame.removeprefix("data: ")) for frame in frames[:-2]]
    assert all(frame.startswith("data: {") and "\r" not in frame for frame in frames[:-2])
    assert all(chunk["choices"][0]["delta"]["role"] == "assistant" for chunk in chunks)
    assert all(len(chunk["choices"][0]["delta"]["content"]) == 1 for chunk in chunks)
    assert "".join(chunk["choices"][0]["delta"]["content"] for chunk in chunks) == FAKE_REPLY
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks][-2:] == [None, "stop"]


def test_sdk_works_on_kuwa_path(live: Live) -> None:
    kuwa = client(live, "/v1.0")
    answer = kuwa.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == FAKE_REPLY
    streamed = kuwa.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == FAKE_REPLY


@pytest.mark.parametrize("path", ["/v1", "/v1.0"])
def test_models_list_shows_exactly_the_permitted_models(live: Live, path: str) -> None:
    assert [model.id for model in client(live, path, live.other_token).models.list()] == ["fake"]
    everything = {model.id for model in client(live, path).models.list()}
    assert {"fake", "idle", *UPSTREAM_MODELS} <= everything
    assert client(live, path).models.retrieve("oc").id == "oc"
    with pytest.raises(openai.NotFoundError):
        client(live, path, live.other_token).models.retrieve("oc")


def test_parameters_reach_an_openai_compatible_upstream(live: Live) -> None:
    answer = client(live).chat.completions.create(
        model="oc-params", messages=[{"role": "user", "content": "hi"}], temperature=0.5, top_p=0.9, seed=7,
        stop=["END"], max_completion_tokens=50, n=1, tools=TOOLS, tool_choice="auto",
        response_format={"type": "json_object"}, extra_body={"top_k": 5, "ignore_eos": True},
    )
    received = json.loads(answer.choices[0].message.content or "")
    assert received["temperature"] == 0.5 and received["top_p"] == 0.9 and received["seed"] == 7
    assert received["stop"] == ["END"] and received["max_completion_tokens"] == 50 and received["n"] == 1
    assert received["tools"] == TOOLS and received["tool_choice"] == "auto"
    assert received["response_format"] == {"type": "json_object"} and received["top_k"] == 5
    assert "ignore_eos" not in received  # beyond OpenAI's parameters and not in the LLM's extra_params


def test_usage_is_recorded_off_the_request_path(live: Live) -> None:
    answer = client(live).chat.completions.create(model="oc", messages=[{"role": "user", "content": "hi"}])
    [record] = usage_records(live.system.database_url, answer.id)
    assert (record.model, record.status, record.stream) == ("oc", 200, False)
    assert (record.prompt_tokens, record.completion_tokens) == (3, 8)
    assert record.latency_ms >= 0 and record.ttft_ms is not None


def test_cors_preflight_with_authorization_is_answered(live: Live) -> None:
    preflight = httpx.options(f"{live.base}/v1/chat/completions", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    denied = httpx.options(f"{live.base}/v1/chat/completions", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in denied.headers


def test_upstream_key_comes_from_the_named_environment_variable(live: Live, upstream: str) -> None:
    live.system.cli("llm", "add", "oc-keyed", "--backend", "openai_compat", "--base-url", upstream,
                    "--upstream-model", "params", "--api-key-env", "TEST_UPSTREAM_API_KEY")
    live.system.cli("group", "grant", "everything", "oc-keyed")
    live.system.worker("oc-keyed", TEST_UPSTREAM_API_KEY="sk-upstream-secret")
    answer = client(live).chat.completions.create(model="oc-keyed", messages=[{"role": "user", "content": "hi"}])
    assert json.loads(answer.choices[0].message.content or "")["authorization"] == "Bearer sk-upstream-secret"


def test_health_and_readiness(live: Live) -> None:
    assert httpx.get(f"{live.base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{live.base}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": True, "database": True}

"""Every failure a client can meet returns OpenAI's error envelope with the status the design names,
and no body, however malformed, gets a 500."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.live import Live
from tests.waiting import until

CHAT = "/v1/chat/completions"
HELLO = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def post(live: Live, body: Any, token: str | None = None, path: str = CHAT,
         headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(live.base + path, content=content, headers=sent, timeout=30)


def assert_error(response: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


def test_missing_and_bad_tokens_get_401(live: Live) -> None:
    assert_error(post(live, HELLO), 401, "missing_api_key")
    assert_error(post(live, HELLO, "mp-not-a-real-token"), 401, "invalid_api_key")
    assert_error(post(live, HELLO, headers={"Authorization": "Basic abc"}), 401, "invalid_api_key")


def test_revoked_token_gets_401_within_a_second(live: Live) -> None:
    token = live.system.user_with_token("fake")
    assert post(live, HELLO, token).status_code == 200
    live.system.changed("token", "revoke", token[:12])
    assert_error(post(live, HELLO, token), 401, "token_revoked")


def test_expired_token_gets_401(live: Live) -> None:
    user = "short-lived"
    live.system.cli("user", "add", user)
    live.system.cli("user", "join", user, "everything")
    token = live.system.cli("token", "create", user, "--expires-days", "0.00001").strip().splitlines()[-1]
    time.sleep(1.0)
    assert_error(post(live, HELLO, token), 401, "token_expired")


def test_model_rules(live: Live) -> None:
    assert_error(post(live, {**HELLO, "model": "oc"}, live.other_token), 403, "model_not_permitted", "model")
    assert_error(post(live, {**HELLO, "model": "no-such-model"}, live.token), 404, "model_not_found", "model")
    assert_error(post(live, {**HELLO, "model": "idle"}, live.token), 503, "no_worker")


@pytest.mark.parametrize(("body", "param"), [
    (b"{not json", None),
    (b"[1, 2]", None),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "fake", "messages": "hi"}, "messages"),
    ({"model": "fake", "messages": []}, "messages"),
    ({**HELLO, "temperature": "hot"}, "temperature"),
    ({**HELLO, "temperature": 3}, "temperature"),
    ({**HELLO, "n": 0}, "n"),
    ({**HELLO, "stream": "yes"}, "stream"),
    ({**HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({**HELLO, "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": "fake", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
])
def test_invalid_bodies_get_400_naming_the_parameter(live: Live, body: Any, param: str | None) -> None:
    assert_error(post(live, body, live.token), 400, None, param)


def test_body_over_the_limit_gets_413(live: Live) -> None:
    huge = {**HELLO, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    assert_error(post(live, huge, live.token), 413, "request_too_large")


@pytest.mark.parametrize(("model", "status", "code"), [
    ("oc-401", 502, "upstream_authentication_failed"),
    ("oc-429", 429, "upstream_rate_limited"),
    ("oc-400", 400, "context_length_exceeded"),
])
def test_upstream_errors_map_to_our_family(live: Live, model: str, status: int, code: str) -> None:
    answer = post(live, {**HELLO, "model": model}, live.token)
    assert_error(answer, status, code)
    message = answer.json()["error"]["message"]
    assert "upstream said" not in message and "maximum context length is 8" not in message, \
        "the upstream's own words stay in the worker's log"
    streamed = post(live, {**HELLO, "model": model, "stream": True}, live.token)
    assert_error(streamed, status, code)


def test_full_queue_gets_429_with_retry_after(live: Live) -> None:
    system = live.system
    system.cli("llm", "add", "narrow", "--backend", "fake", "--delay-ms", "200", "--concurrency", "1",
               "--max-queue", "1")
    system.cli("group", "grant", "everything", "narrow")
    system.worker("narrow")
    body = {**HELLO, "model": "narrow"}
    first = threading.Thread(target=post, args=(live, body, live.token))
    first.start()
    until(lambda: system.queued("narrow") == 1, "the first request is queued")
    rejected = post(live, body, live.token)
    first.join()
    assert_error(rejected, 429, "queue_full")
    assert rejected.headers["retry-after"] == "1"


def test_unknown_route_and_method_use_the_envelope(live: Live) -> None:
    assert_error(httpx.get(f"{live.base}/v1/nothing"), 404, "unknown_url")
    assert_error(httpx.get(f"{live.base}{CHAT}"), 405)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
near_valid = st.fixed_dictionaries(
    {"model": st.sampled_from(["fake", "oc", "", "idle"]) | json_values},
    optional={"messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "x"])},
                                                         optional={"content": json_values}), max_size=3)
              | json_values,
              "stream": json_values, "temperature": json_values, "n": json_values, "stop": json_values,
              "max_tokens": json_values, "tools": json_values, "stream_options": json_values},
)


near_valid_embedding = st.fixed_dictionaries(
    {"model": st.sampled_from(["fake-embed", "oc-embed", "fake"]) | json_values},
    optional={"input": st.text(max_size=20) | st.lists(st.text(max_size=8) | st.integers(), max_size=4)
              | st.lists(st.lists(st.integers(), max_size=4), max_size=3) | json_values,
              "encoding_format": st.sampled_from(["float", "base64", "hex"]) | json_values,
              "dimensions": json_values, "user": json_values},
)
near_valid_completion = st.fixed_dictionaries(
    {"model": st.sampled_from(["fake", "oc", "fake-embed"]) | json_values},
    optional={"prompt": st.text(max_size=20) | st.lists(st.text(max_size=8) | st.integers(), max_size=4)
              | json_values,
              "n": json_values, "best_of": json_values, "echo": json_values, "suffix": json_values,
              "stream": json_values, "max_tokens": json_values, "stop": json_values, "logprobs": json_values},
)
item = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "x"]) | json_values,
    "role": st.sampled_from(["user", "assistant", "system", "tool"]) | json_values,
    "content": st.text(max_size=8) | st.lists(st.fixed_dictionaries({"type": st.sampled_from(
        ["input_text", "input_image", "output_text", "input_file"])}, optional={"text": json_values,
                                                                                "image_url": json_values}),
        max_size=3) | json_values,
    "call_id": json_values, "name": json_values, "arguments": json_values, "output": json_values})
near_valid_response = st.fixed_dictionaries(
    {"model": st.sampled_from(["fake", "oc-tools", "fake-embed"]) | json_values},
    optional={"input": st.text(max_size=20) | st.lists(item, max_size=3) | json_values,
              "instructions": json_values, "tools": st.lists(st.fixed_dictionaries({"type": st.sampled_from(
                  ["function", "web_search"]) | json_values}, optional={"name": json_values,
                                                                        "parameters": json_values}), max_size=2)
              | json_values, "tool_choice": json_values, "text": json_values, "stream": json_values,
              "previous_response_id": json_values, "metadata": json_values, "store": json_values,
              "max_output_tokens": json_values, "background": json_values},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=near_valid | json_values | st.binary(max_size=64), path=st.sampled_from([CHAT, "/v1.0/chat/completions"]))
def test_random_bodies_never_get_a_500(live: Live, body: Any, path: str) -> None:
    response = post(live, body, live.token, path)
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code >= 400:
        assert "error" in response.json()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.tuples(st.just("/v1/embeddings"), near_valid_embedding | json_values | st.binary(max_size=64)),
                      st.tuples(st.just("/v1/completions"), near_valid_completion | json_values
                                | st.binary(max_size=64)),
                      st.tuples(st.just("/v1/responses"), near_valid_response | json_values
                                | st.binary(max_size=64))))
def test_random_bodies_of_the_other_endpoints_never_get_a_500(live: Live, data: tuple[str, Any]) -> None:
    path, body = data
    response = post(live, body, live.token, path)
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code >= 400:
        assert "error" in response.json()

"""Fallbacks on a live gateway: a request its LLM cannot serve before the first delta (upstream 500 or 429,
an upstream refusing connections, no worker) is answered by the next fallback the caller may use, streamed
or not, on /v1 and /v1.0; the answer names the model that answered, and so do the metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.live import Live
from tests.servers import free_port

FAKE_REPLY = "Hello from the fake model. 你好，世界！"
PRIMARIES = ("fb-500", "fb-429", "fb-refused", "fb-idle")
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def models(live: Live, upstream: str) -> Iterator[None]:
    """Four failing primaries, each falling back to ``fb-answer``; ``power`` may use them all."""
    system = live.system
    for name, upstream_model, base in (("fb-500", "status-500", upstream), ("fb-429", "status-429", upstream),
                                       ("fb-refused", "chunks-8", f"http://127.0.0.1:{free_port()}/v1")):
        system.cli("llm", "add", name, "--backend", "openai_compat", "--base-url", base,
                   "--upstream-model", upstream_model)
    system.cli("llm", "add", "fb-idle", "--backend", "fake")
    system.cli("llm", "add", "fb-answer", "--backend", "fake")
    for name in (*PRIMARIES, "fb-answer"):
        system.cli("group", "grant", "everything", name)
    for name in PRIMARIES:
        system.cli("llm", "set", name, "--fallbacks", "fb-answer")
    system.workers("fb-500", "fb-429", "fb-refused", "fb-answer")
    yield
    for name in PRIMARIES:
        system.cli("llm", "set", name, "--fallbacks", "")


def post(live: Live, path: str, token: str, **body: object) -> httpx.Response:
    return httpx.post(f"{live.base}{path}/chat/completions", headers={"Authorization": f"Bearer {token}"},
                      json={"messages": HI, **body}, timeout=30)


@pytest.mark.parametrize("primary", PRIMARIES)
def test_a_request_its_llm_cannot_serve_is_answered_by_the_fallback(live: Live, models: None, primary: str) -> None:
    whole = post(live, "/v1", live.token, model=primary)
    assert whole.status_code == 200, whole.text
    assert whole.json()["model"] == "fb-answer" and whole.headers["x-modelport-served-by"] == "fb-answer"
    assert whole.json()["choices"][0]["message"]["content"] == FAKE_REPLY
    with openai.OpenAI(base_url=live.base + "/v1", api_key=live.token, max_retries=0) as client:
        chunks = list(client.chat.completions.create(model=primary, messages=[{"role": "user", "content": "hi"}],
                                                     stream=True))
    assert {chunk.model for chunk in chunks} == {"fb-answer"}
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == FAKE_REPLY
    kuwa = post(live, "/v1.0", live.token, model=primary, stream=True)
    frames = [json.loads(line[len("data: "):]) for line in kuwa.text.splitlines()
              if line.startswith("data: {")]
    assert "".join(frame["choices"][0]["delta"].get("content", "") for frame in frames if frame["choices"]) == (
        FAKE_REPLY)
    assert kuwa.headers["x-modelport-served-by"] == "fb-answer"
    kuwa_whole = post(live, "/v1.0", live.token, model=primary, stream=False)
    assert kuwa_whole.json()["choices"][0]["exit_code"] == 0 and kuwa_whole.json()["model"] == "fb-answer"


def test_fallbacks_chain_and_the_answering_model_is_counted(live: Live, models: None) -> None:
    live.system.cli("llm", "set", "fb-500", "--fallbacks", "fb-idle,fb-answer")
    answer = post(live, "/v1", live.token, model="fb-500")
    assert answer.status_code == 200 and answer.headers["x-modelport-served-by"] == "fb-answer"
    assert re.match(r"chatcmpl-[0-9a-f]{32}$", answer.headers["x-request-id"])
    metrics = httpx.get(f"{live.base}/metrics").text
    assert re.search(r'modelport_requests_total\{endpoint="chat",model="fb-answer",status="200"\} [1-9]', metrics)
    assert not re.search(r'modelport_requests_total\{endpoint="chat",model="fb-500",status="200"\}', metrics)
    live.system.cli("llm", "set", "fb-500", "--fallbacks", "fb-answer")


def test_without_a_grant_on_the_fallback_the_primarys_error_stands(live: Live, models: None) -> None:
    token = live.system.user_with_token("fb-500")
    refused = post(live, "/v1", token, model="fb-500")
    assert refused.status_code == 502 and refused.json()["error"]["code"] == "upstream_error"
    assert refused.headers["x-modelport-served-by"] == "fb-500"
    idle = live.system.user_with_token("fb-idle")
    assert post(live, "/v1", idle, model="fb-idle").json()["error"]["code"] == "no_worker"


def test_errors_that_are_the_callers_own_do_not_fall_back(live: Live, models: None) -> None:
    bad = post(live, "/v1", live.token, model="fb-500", temperature=7)
    assert bad.status_code == 400


def test_fallbacks_are_other_registered_llms(live: Live, models: None) -> None:
    for fallbacks in ("fb-500", "no-such-llm", "fb-answer,fb-answer", "a,b,c,d,e"):
        with pytest.raises(SystemExit):
            live.system.cli("llm", "set", "fb-500", "--fallbacks", fallbacks)


def test_aborting_the_request_by_its_id_reaches_the_fallbacks_job(live: Live, models: None) -> None:
    live.system.cli("llm", "add", "fb-slow", "--backend", "fake", "--delay-ms", "100", "--chunks", "30")
    live.system.cli("group", "grant", "everything", "fb-slow")
    live.system.worker("fb-slow")
    live.system.cli("llm", "set", "fb-500", "--fallbacks", "fb-slow")
    headers = {"Authorization": f"Bearer {live.token}"}
    with httpx.stream("POST", f"{live.base}/v1.0/chat/completions", headers=headers, timeout=30,
                      json={"model": "fb-500", "messages": HI, "stream": True}) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        aborted = httpx.post(f"{live.base}/v1.0/chat/abort", headers=headers,
                             json={"ids": [stream.headers["x-request-id"]]})
        rest = list(lines)
    live.system.cli("llm", "set", "fb-500", "--fallbacks", "fb-answer")
    assert aborted.json() == {"object": "chat.abort", "cancelled": 1}
    last = json.loads([line for line in rest if line.startswith("data: {")][-1][len("data: "):])
    assert last["choices"][0]["exit_code"] == 1 and last["model"] == "fb-slow"

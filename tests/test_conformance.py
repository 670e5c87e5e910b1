"""ModelPort's answers against OpenAI's own schemas (its published OpenAPI spec, cut to what is checked in
tests/openapi/): answers, stream chunks (with tool calls, usage and ModelPort's cost extension), errors, models."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.live import TOOLS, Live
from tests.openapi_schemas import problems


def post(live: Live, **body: Any) -> httpx.Response:
    return httpx.post(f"{live.base}/v1/chat/completions", headers={"Authorization": f"Bearer {live.token}"},
                      json={"messages": [{"role": "user", "content": "hi"}], **body}, timeout=30)


def chunks(live: Live, **body: Any) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{live.base}/v1/chat/completions", headers={"Authorization": f"Bearer {live.token}"},
                      json={"messages": [{"role": "user", "content": "hi"}], "stream": True, **body},
                      timeout=30) as answer:
        return [json.loads(line[6:]) for line in answer.iter_lines()
                if line.startswith("data: ") and line != "data: [DONE]"]


@pytest.mark.parametrize("model", ["fake", "oc", "oc-tools"])
def test_answers_are_openais_chat_completion(live: Live, model: str) -> None:
    extra = {"tools": TOOLS} if model == "oc-tools" else {}
    answer = post(live, model=model, **extra)
    assert answer.status_code == 200 and problems("CreateChatCompletionResponse", answer.json()) == []


@pytest.mark.parametrize("model", ["fake", "oc-tools"])
def test_stream_chunks_are_openais_chunks(live: Live, model: str) -> None:
    extra = {"tools": TOOLS} if model == "oc-tools" else {}
    found = chunks(live, model=model, stream_options={"include_usage": True}, **extra)
    assert len(found) >= 2 and found[-1]["usage"]["total_tokens"] > 0
    assert [problem for chunk in found for problem in problems("CreateChatCompletionStreamResponse", chunk)] == []


def test_errors_and_model_lists_are_openais(live: Live) -> None:
    for answer in (post(live, model="no-such-model"), post(live, model="fake", temperature=7),
                   httpx.get(f"{live.base}/v1/models")):
        assert answer.status_code >= 400 and problems("ErrorResponse", answer.json()) == [], answer.text
    models = httpx.get(f"{live.base}/v1/models", headers={"Authorization": f"Bearer {live.token}"}).json()
    assert problems("ListModelsResponse", models) == []

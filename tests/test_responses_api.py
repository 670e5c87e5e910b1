"""The Responses API bridged onto chat models through a live gateway, Redis and real workers, driven by the
official openai SDK (create, stream, the ``responses.stream()`` helper, retrieve, delete, input items,
``previous_response_id``, a function-call round trip), every body and event checked against OpenAI's schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import FunctionToolParam

from tests.live import Live
from tests.openapi_schemas import event_problems, problems
from tests.system import usage_records

FAKE_REPLY = "Hello from the fake model. 你好，世界！"
WEATHER: list[FunctionToolParam] = [{"type": "function", "name": "get_weather", "strict": False,
                                     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
STREAM_ORDER = ["response.created", "response.in_progress", "response.output_item.added",
                "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                "response.content_part.done", "response.output_item.done", "response.completed"]


@pytest.fixture
def sdk(live: Live) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=live.base + "/v1", api_key=live.token, max_retries=0) as client:
        yield client


@pytest.fixture
def other(live: Live) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=live.base + "/v1", api_key=live.other_token, max_retries=0) as client:
        yield client


def received_messages(text: str) -> list[dict[str, Any]]:
    """The chat messages the ``request`` upstream says it was sent."""
    messages: list[dict[str, Any]] = json.loads(text)["messages"]
    return messages


def test_create_retrieve_list_inputs_and_delete(live: Live, sdk: openai.OpenAI, other: openai.OpenAI) -> None:
    raw = sdk.responses.with_raw_response.create(model="fake", input="hi", metadata={"ticket": "42"})
    answer = raw.parse()
    assert answer.id.startswith("resp_") and answer.status == "completed" and answer.output_text == FAKE_REPLY
    assert answer.usage is not None and (answer.usage.input_tokens, answer.usage.output_tokens) == (1, 6)
    assert answer.metadata == {"ticket": "42"} and answer.model == "fake"
    assert problems("Response", json.loads(raw.text)) == []
    [record] = usage_records(live.system.database_url, raw.headers["x-request-id"])
    assert (record.endpoint, record.completion_tokens) == ("responses", 6)
    again = httpx.get(f"{live.base}/v1/responses/{answer.id}", headers={"Authorization": f"Bearer {live.token}"})
    assert again.json() == json.loads(raw.text)
    items = sdk.responses.input_items.list(answer.id)
    assert [(item.type, item.role) for item in items.data] == [("message", "user")]  # type: ignore[union-attr]
    listed = httpx.get(f"{live.base}/v1/responses/{answer.id}/input_items",
                       headers={"Authorization": f"Bearer {live.token}"}).json()
    assert problems("ResponseItemList", listed) == []
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(answer.id)  # another user's response does not exist for them
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(answer.id)
    sdk.responses.delete(answer.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(answer.id)


def test_stream_events_come_in_order_and_are_openais(live: Live) -> None:
    with httpx.stream("POST", f"{live.base}/v1/responses", headers={"Authorization": f"Bearer {live.token}"},
                      json={"model": "fake", "input": "hi", "stream": True}, timeout=30) as answer:
        events = [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: ")]
    kinds = [event["type"] for event in events]
    assert [kind for position, kind in enumerate(kinds) if kind not in kinds[:position]] == STREAM_ORDER
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    deltas = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    assert deltas == FAKE_REPLY == events[-1]["response"]["output"][0]["content"][0]["text"]
    assert events[-1]["response"]["usage"]["output_tokens"] == 6
    assert [problem for event in events for problem in event_problems(event)] == []


def test_sdk_streams_and_its_stream_helper_gets_the_final_response(sdk: openai.OpenAI) -> None:
    streamed = [event.type for event in sdk.responses.create(model="oc", input="hi", stream=True)]
    assert streamed[0] == "response.created" and streamed[-1] == "response.completed"
    with sdk.responses.stream(model="fake", input="hi") as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == FAKE_REPLY and final.status == "completed"


def test_previous_response_id_continues_the_conversation(sdk: openai.OpenAI, other: openai.OpenAI) -> None:
    first = sdk.responses.create(model="fake", input="My name is Ada", instructions="Be brief")
    second = sdk.responses.create(model="oc-request", input="What is my name?", previous_response_id=first.id,
                                  instructions="Answer in French")
    assert received_messages(second.output_text) == [
        {"role": "system", "content": "Answer in French"},  # instructions are not carried over
        {"role": "user", "content": [{"type": "text", "text": "My name is Ada"}]},
        {"role": "assistant", "content": FAKE_REPLY},
        {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}]
    assert second.previous_response_id == first.id
    with pytest.raises(openai.NotFoundError) as missing:
        other.responses.create(model="fake", input="hi", previous_response_id=first.id)
    assert missing.value.param == "previous_response_id"
    unstored = sdk.responses.create(model="fake", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)


def test_a_function_call_round_trip(sdk: openai.OpenAI) -> None:
    call = sdk.responses.create(model="oc-tools", input="Weather in Taipei?", tools=WEATHER, tool_choice="auto")
    [item] = call.output
    assert item.type == "function_call" and (item.name, item.call_id) == ("get_weather", "call_1")
    assert json.loads(item.arguments) == {"city": "Taipei"}
    answer = sdk.responses.create(model="oc-request", previous_response_id=call.id, tools=WEATHER, input=[
        {"type": "function_call_output", "call_id": item.call_id, "output": "sunny"}])
    messages = received_messages(answer.output_text)
    assert messages[1:] == [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Taipei"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    with sdk.responses.stream(model="oc-tools", input="Weather?", tools=WEATHER) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    assert final.output[0].type == "function_call"


def test_parameters_map_onto_chat(sdk: openai.OpenAI) -> None:
    answer = sdk.responses.create(model="oc-params", input="hi", max_output_tokens=50, temperature=0.3, top_p=0.5,
                                  user="u-1", text={"format": {"type": "json_schema", "name": "city", "strict": True,
                                                               "schema": {"type": "object"}}})
    received = json.loads(answer.output_text)
    assert received["max_completion_tokens"] == 50 and received["temperature"] == 0.3 and received["top_p"] == 0.5
    assert received["user"] == "u-1" and received["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}, "strict": True}}
    assert answer.text is not None and answer.text.format is not None and answer.text.format.type == "json_schema"


def test_unsupported_and_malformed_requests_are_400s(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.token}"}
    for body, param in (({"tools": [{"type": "web_search"}]}, "tools[0].type"), ({"background": True}, None),
                        ({"input": [{"type": "computer_call"}]}, "input[0].type"),
                        ({"input": [{"type": []}]}, "input[0].type"), ({"instructions": "i" * 1_000_001},
                                                                       "instructions"),
                        ({"text": {"format": {"type": "json_schema", "description": "d" * 70_000}}},
                         "text.format.description"), ({"input": [{"role": {}}]}, "input[0].role"),
                        ({"input": [{"role": "user", "content": {}}]}, "input[0].content"),
                        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content[0]"),
                        ({"input": 5}, "input"), ({"metadata": {"k": "v" * 600}}, "metadata.k"),
                        ({"model": "fake-embed"}, "model"), ({"input": []}, "input")):
        answer = httpx.post(f"{live.base}/v1/responses", headers=headers, json={"model": "fake", "input": "hi", **body})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, (body, answer.text)
    made = httpx.post(f"{live.base}/v1/responses", headers=headers, json={"model": "fake", "input": "hi"}).json()
    for query, param in (("limit=0", "limit"), ("limit=x", "limit"), ("order=up", "order"), ("after=nope", "after")):
        listed = httpx.get(f"{live.base}/v1/responses/{made['id']}/input_items?{query}", headers=headers)
        assert listed.status_code == 400 and listed.json()["error"]["param"] == param
    for method in ("GET", "DELETE"):
        assert httpx.request(method, f"{live.base}/v1/responses/{'x' * 5000}", headers=headers).status_code == 404

"""A chat job's events as a Responses API response: output items (a message, function calls) built from
the deltas, rendered as one ``response`` body or as the event sequence the SDKs' stream helpers expect."""

from __future__ import annotations

import copy
from typing import Any

import orjson

from modelport.gateway.render import BodyBuilder
from modelport.protocol.envelope import ChoiceDelta, Delta, Done, Usage
from modelport.protocol.errors import ErrorBody
from modelport.protocol.responses_wire import ResponseRequest, new_id

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
Event = dict[str, Any]


class ResponseState:
    """One response as it forms: the request's settings it echoes, and its output items in the order they
    began, each with the stream events that build it."""

    def __init__(self, response_id: str, model: str, created: int, request: ResponseRequest) -> None:
        text = request.text
        self.head: dict[str, Any] = {
            "id": response_id, "object": "response", "created_at": created, "model": model,
            "instructions": request.instructions, "max_output_tokens": request.max_output_tokens,
            "temperature": request.temperature if request.temperature is not None else 1.0,
            "top_p": request.top_p if request.top_p is not None else 1.0,
            "tools": [tool.model_dump(exclude_none=True) for tool in request.function_tools()],
            "tool_choice": request.tool_choice.model_dump() if not isinstance(request.tool_choice, str | None)
            else request.tool_choice or "auto",
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "text": {"format": text.format.model_dump(by_alias=True, exclude_none=True)
                     if text and text.format else {"type": "text"}},
            "previous_response_id": request.previous_response_id, "metadata": request.metadata or {},
            "store": request.store, "truncation": request.truncation or "disabled",
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default"}
        if request.user is not None:  # typed as a string, so absent rather than null
            self.head["user"] = request.user
        self.items: list[dict[str, Any]] = []
        self._message: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None

    def add(self, choice: ChoiceDelta) -> list[Event]:
        """Take a delta of the answer; the events that tell a streaming client of it."""
        events: list[Event] = []
        if choice.content:
            events += self._text(choice.content)
        for fragment in choice.tool_calls or []:
            call = self._calls.get(fragment.index)
            if call is None:
                call = self._calls[fragment.index] = self._open({
                    "type": "function_call", "id": new_id("fc"), "call_id": fragment.id or new_id("call"),
                    "name": (fragment.function or {}).get("name", ""), "arguments": "", "status": "in_progress"},
                    events)
            arguments = (fragment.function or {}).get("arguments", "")
            if arguments:
                call["arguments"] += arguments
                events.append({"type": "response.function_call_arguments.delta", "item_id": call["id"],
                               "output_index": self.items.index(call), "delta": arguments})
        self.finish = choice.finish_reason or self.finish
        return events

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        message = self._message
        if message is None:
            message = self._message = self._open({"type": "message", "id": new_id("msg"), "status": "in_progress",
                                                   "role": "assistant", "content": []}, events)
            message["content"].append({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            events.append({"type": "response.content_part.added", **self._at(message),
                           "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
        message["content"][0]["text"] += text
        events.append({"type": "response.output_text.delta", **self._at(message), "delta": text, "logprobs": []})
        return events

    def _open(self, item: dict[str, Any], events: list[Event]) -> dict[str, Any]:
        self.items.append(item)
        events.append({"type": "response.output_item.added", "output_index": len(self.items) - 1,
                       "item": copy.deepcopy(item)})
        return item

    def _at(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": message["id"], "output_index": self.items.index(message), "content_index": 0}

    def close(self) -> list[Event]:
        """Finish every output item; the events that say so."""
        status = "incomplete" if self.finish in INCOMPLETE else "completed"
        events: list[Event] = []
        for index, item in enumerate(self.items):
            item["status"] = status
            if item["type"] == "message":
                part = item["content"][0]
                events += [{"type": "response.output_text.done", **self._at(item), "text": part["text"],
                            "logprobs": []},
                           {"type": "response.content_part.done", **self._at(item), "part": part}]
            else:
                events.append({"type": "response.function_call_arguments.done", "item_id": item["id"],
                               "output_index": index, "name": item["name"], "arguments": item["arguments"]})
            events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        return events

    def response(self, status: str, usage: Usage | None = None, error: ErrorBody | None = None) -> dict[str, Any]:
        """The response object as it stands."""
        body = {**self.head, "status": status, "output": self.items, "error": None, "incomplete_details": None}
        if usage is not None:  # typed as an object: absent until known
            body["usage"] = {"input_tokens": usage.prompt_tokens,
                             "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                             "output_tokens": usage.completion_tokens,
                             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": usage.total_tokens}
        if status == "incomplete":
            body["incomplete_details"] = {"reason": INCOMPLETE[self.finish or "length"]}
        if error is not None:
            code = "rate_limit_exceeded" if error.status == 429 else "server_error"
            body["error"] = {"code": code, "message": error.message}
        return body

    def final(self, usage: Usage | None) -> dict[str, Any]:
        return self.response("incomplete" if self.finish in INCOMPLETE else "completed", usage)


class ResponseBuilder(BodyBuilder):
    """The whole response as one body (``stream`` not set)."""

    def __init__(self, state: ResponseState) -> None:
        super().__init__()
        self.state = state
        self.result: dict[str, Any] | None = None

    def add(self, delta: Delta) -> None:
        for choice in delta.choices:
            self.state.add(choice)

    def body(self, done: Done) -> bytes:
        self.state.close()
        self.result = self.state.final(done.usage)
        return orjson.dumps(self.result)


class ResponseStreamRenderer:
    """``event:``/``data:`` frames: ``response.created`` and ``response.in_progress``, each item's events as the
    answer arrives, the items' closing events and ``response.completed`` (``response.incomplete`` when the
    output limit or a content filter cut it short) with the usage; every event numbered in order."""

    comments = True

    def __init__(self, state: ResponseState) -> None:
        self.state = state
        self.result: dict[str, Any] | None = None
        self._sequence = 0
        self._began = False

    def delta(self, delta: Delta) -> bytes:
        events = self._beginning() + [event for choice in delta.choices for event in self.state.add(choice)]
        return self._frames(events)

    def end(self, usage: Usage | None, extension: dict[str, Any] | None = None) -> bytes:
        events = self._beginning() + self.state.close()
        self.result = self.state.final(usage)
        kind = "response.incomplete" if self.result["status"] == "incomplete" else "response.completed"
        return self._frames([*events, {"type": kind, "response": self.result}])

    def fail(self, error: ErrorBody) -> bytes:
        events = self._beginning()
        return self._frames([*events, {"type": "response.failed", "response": self.state.response("failed",
                                                                                                  error=error)}])

    def _beginning(self) -> list[Event]:
        if self._began:
            return []
        self._began = True
        started = {**self.state.response("in_progress"), "output": []}
        return [{"type": "response.created", "response": started}, {"type": "response.in_progress",
                                                                     "response": started}]

    def _frames(self, events: list[Event]) -> bytes:
        out = bytearray()
        for event in events:
            event["sequence_number"] = self._sequence
            self._sequence += 1
            out += b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
        return bytes(out)

"""The Responses API's request (``POST /v1/responses``), validated within OpenAI's bounds, and its bridge
onto chat: input items become chat messages, function tools and ``text.format`` their chat forms."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from modelport.protocol.envelope import GenerationParams
from modelport.protocol.errors import InvalidRequest
from modelport.protocol.openai_wire import (
    MAX_CONTENT_PARTS,
    MAX_MESSAGES,
    MAX_TOOLS,
    ExtraBounded,
    FunctionDefinition,
    ModelName,
    Probability,
    ShortText,
    TokenCount,
    WireModel,
)

MAX_METADATA = 16  # OpenAI's: at most 16 pairs, keys up to 64 characters, values up to 512
MAX_INSTRUCTIONS = 1_000_000  # characters (the body limit, 4 MiB by default, usually binds first)
MAX_DESCRIPTION = 65_536
ItemId = Annotated[str, Field(min_length=1, max_length=128)]


class FunctionTool(FunctionDefinition):
    """A Responses function tool: the chat function's fields, flattened beside ``type``."""

    type: Literal["function"]


class NamedFunctionChoice(WireModel):
    type: Literal["function"]
    name: ShortText


class TextFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Field(max_length=64)] | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)] | None = None
    strict: bool | None = None

    def response_format(self) -> dict[str, Any]:
        """Chat's ``response_format`` for this format."""
        if self.type != "json_schema":
            return {"type": self.type}
        schema: dict[str, Any] = {"name": self.name or "response", "schema": self.schema_ or {}}
        if self.description is not None:
            schema["description"] = self.description
        if self.strict is not None:
            schema["strict"] = self.strict
        return {"type": "json_schema", "json_schema": schema}


class TextOptions(WireModel):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


Item = dict[str, Any]
Metadata = Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                     Field(max_length=MAX_METADATA)]


class ResponseRequest(ExtraBounded):
    model: ModelName
    input: str | Annotated[list[Item], Field(max_length=MAX_MESSAGES)] = Field(default_factory=list)
    instructions: Annotated[str, Field(max_length=MAX_INSTRUCTIONS)] | None = None
    max_output_tokens: TokenCount | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Probability | None = None
    tools: Annotated[list[Item], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextOptions | None = None
    previous_response_id: ItemId | None = None
    store: bool = True
    stream: bool | None = None
    metadata: Metadata | None = None
    user: ShortText | None = None
    background: bool | None = None
    include: Annotated[list[ShortText], Field(max_length=16)] | None = None
    truncation: Literal["disabled", "auto"] | None = None

    @model_validator(mode="after")
    def servable(self) -> ResponseRequest:
        if self.background:
            raise ValueError("background mode is not supported: responses run while the request is open")
        return self

    def function_tools(self) -> list[FunctionTool]:
        """The request's tools, all functions (built-in tools such as web search are a 400 naming them)."""
        tools = []
        for position, tool in enumerate(self.tools or []):
            if tool.get("type") != "function":
                raise InvalidRequest(f"The tool type '{tool.get('type')}' is not supported: only function tools "
                                     "are.", param=f"tools[{position}].type")
            tools.append(_parsed(FunctionTool, tool, f"tools[{position}]"))
        return tools

    def items(self) -> list[Item]:
        """The input as items the way OpenAI lists them (``input_items``): typed, with ids and statuses, a
        message's text as content parts."""
        if isinstance(self.input, str):
            return [_normalised({"role": "user", "content": self.input})]
        for position, item in enumerate(self.input):
            if not isinstance(item.get("type", "message"), str):
                raise InvalidRequest(f"Invalid value for 'input[{position}].type': a string is expected.",
                                     param=f"input[{position}].type")
        return [_normalised(item) for item in self.input]

    def generation_params(self, history: list[dict[str, Any]], items: list[Item]) -> GenerationParams:
        """The chat job: the instructions, the conversation so far, then this input's items as messages."""
        messages = ([{"role": "system", "content": self.instructions}] if self.instructions else []) + history
        messages += messages_of(items)
        if not messages:
            raise InvalidRequest("The request has no input.", param="input")
        tools = [{"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
                 for tool in self.function_tools()]
        choice = self.tool_choice
        fields: dict[str, Any] = {
            "messages": messages, "temperature": self.temperature, "top_p": self.top_p,
            "max_completion_tokens": self.max_output_tokens, "tools": tools or None,
            "tool_choice": {"type": "function", "function": {"name": choice.name}}
            if isinstance(choice, NamedFunctionChoice) else choice,
            "parallel_tool_calls": self.parallel_tool_calls, "user": self.user,
            "response_format": self.text.format.response_format() if self.text and self.text.format else None}
        return GenerationParams(**fields, extra=self.model_extra or {})


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _normalised(item: Item) -> Item:
    kind = item.get("type", "message")
    done = {"status": "completed"}
    if kind != "message":
        prefix = {"function_call": "fc", "function_call_output": "fco"}.get(kind, "item")
        return {**(done if kind != "reasoning" else {}), **item, "id": item.get("id") or new_id(prefix)}
    content = item.get("content")
    assistant = item.get("role") == "assistant"
    if isinstance(content, str):
        content = [{"type": "output_text", "text": content, "annotations": [], "logprobs": []} if assistant
                   else {"type": "input_text", "text": content}]
    return {**(done if assistant else {}), **item, "type": "message", "content": content,
            "id": item.get("id") or new_id("msg")}


def messages_of(items: list[Item]) -> list[dict[str, Any]]:
    """Input (or stored output) items as chat messages: messages with their text and images, function calls
    as an assistant's tool calls (consecutive ones in one message), their outputs as tool messages."""
    messages: list[dict[str, Any]] = []
    for position, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, f"input[{position}]"))
        elif kind == "function_call":
            function = {"name": _text(item, "name", position), "arguments": _text(item, "arguments", position)}
            call = {"id": _text(item, "call_id", position), "type": "function", "function": function}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") and not last["content"]:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": _text(item, "call_id", position),
                             "content": output if isinstance(output, str) else _parts(output, position)})
        elif kind != "reasoning":  # a reasoning item handed back by a client carries nothing a chat model reads
            raise InvalidRequest(f"The input item type '{kind}' is not supported.", param=f"input[{position}].type")
    return messages


def _message(item: Item, param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise InvalidRequest(f"Invalid value for '{param}.role': {role!r}.", param=f"{param}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list) or len(content) > MAX_CONTENT_PARTS:
        raise InvalidRequest(f"'{param}.content' is a string or a list of content parts.", param=f"{param}.content")
    parts = [_part(part, f"{param}.content[{index}]") for index, part in enumerate(content)]
    if role == "assistant":  # chat takes an assistant's text as a string
        return {"role": role, "content": "".join(part.get("text", "") for part in parts)}
    return {"role": role, "content": parts}


def _part(part: Any, param: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail") or "auto"}}
    raise InvalidRequest(f"The content part at '{param}' is not supported (input_text, output_text, refusal and "
                         "input_image with an image_url are).", param=param)


def _parts(content: Any, position: int) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        raise InvalidRequest("A function call's output is a string or a list of content parts.",
                             param=f"input[{position}].output")
    return [_part(part, f"input[{position}].output[{index}]") for index, part in enumerate(content)]


def _text(item: Item, field: str, position: int) -> str:
    value = item.get(field)
    if not isinstance(value, str) or (not value and field != "arguments"):
        raise InvalidRequest(f"Missing or invalid '{field}' in input[{position}].", param=f"input[{position}].{field}")
    return value


def _parsed(kind: type[FunctionTool], value: Item, param: str) -> FunctionTool:
    try:
        return kind.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"Invalid value for '{param}.{field}': {first['msg']}.",
                             param=f"{param}.{field}") from None

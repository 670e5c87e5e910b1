"""OpenAI chat-completions wire models: what clients may send, validated once at the gateway."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelport.protocol.envelope import GenerationParams
from modelport.protocol.errors import InvalidRequest

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]

# Bounds on what a client may send (OpenAI's own where it publishes one), so that no request costs a
# gateway or a worker more than its size says: parsing, estimating and stop matching stay linear and small.
MAX_MESSAGES = 2048  # OpenAI refuses more with a 400 naming `messages`
MAX_CONTENT_PARTS = 512
MAX_TOOLS = 128  # OpenAI's limit on function definitions
MAX_TOOL_CALLS = 128
MAX_STOP_LENGTH = 256
MAX_COMPLETION_TOKENS = 1_000_000
MAX_LOGIT_BIAS = 1024
MAX_EXTRA_FIELDS = 32
MAX_BOTFILE = 65_536
ShortText = Annotated[str, Field(max_length=256)]
ModelName = Annotated[str, Field(min_length=1, max_length=256)]


class WireModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class ExtraBounded(WireModel):
    """A request that may carry a few parameters beyond OpenAI's (for upstreams whose operator allows them)."""

    @model_validator(mode="after")
    def few_extra_fields(self) -> ExtraBounded:
        if len(self.model_extra or {}) > MAX_EXTRA_FIELDS:
            raise ValueError(f"at most {MAX_EXTRA_FIELDS} parameters beyond OpenAI's may be sent")
        return self


WireT = TypeVar("WireT", bound=WireModel)


class Message(WireModel):
    role: Role
    content: str | Annotated[list[dict[str, Any]], Field(max_length=MAX_CONTENT_PARTS)] | None = None
    name: ShortText | None = None
    tool_calls: Annotated[list[dict[str, Any]], Field(max_length=MAX_TOOL_CALLS)] | None = None
    tool_call_id: ShortText | None = None

    @field_validator("content")
    @classmethod
    def parts_have_type(cls, value: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        if isinstance(value, list) and any(not isinstance(part.get("type"), str) for part in value):
            raise ValueError("every content part needs a string 'type'")
        return value


class StreamOptions(WireModel):
    include_usage: bool = False


class FunctionDefinition(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(WireModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(WireModel):
    name: ShortText


class NamedToolChoice(WireModel):
    type: Literal["function"]
    function: NamedFunction


class ResponseFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


Probability = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
TokenCount = Annotated[int, Field(ge=1, le=MAX_COMPLETION_TOKENS)]
StopSequence = Annotated[str, Field(max_length=MAX_STOP_LENGTH)]


class ChatCompletionRequest(ExtraBounded):
    model: ModelName
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Probability | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    stop: StopSequence | Annotated[list[StopSequence], Field(max_length=4)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), lt=2**63)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]],
                          Field(max_length=MAX_LOGIT_BIAS)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    user: ShortText | None = None
    # Kuwa's ad-hoc preset for this one request (see protocol.presets); never sent to a backend.
    botfile: Annotated[str, Field(max_length=MAX_BOTFILE)] | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def prompt_estimate(self) -> int:
        """About four characters a token of the prompt."""
        characters = sum(len(message.model_dump_json(include={"content", "tool_calls"})) for message in self.messages)
        return characters // 4 + 1

    def completion_reserve(self, default_completion: int) -> int:
        """The completion limit (or ``default_completion``) for each of the ``n`` choices."""
        return (self.completion_limit or default_completion) * (self.n or 1)

    def generation_params(self) -> GenerationParams:
        """What the backend generates from: the parameters the client set, minus transport fields, with a
        single stop sequence as a list and the fields beyond OpenAI's kept apart."""
        extra = self.model_extra or {}
        fields = self.model_dump(mode="json", exclude_unset=True,
                                 exclude={"model", "stream", "stream_options", "botfile", *extra})
        if isinstance(self.stop, str):
            fields["stop"] = [self.stop]
        return GenerationParams(**fields, extra=extra)


MAX_ABORT_IDS = 256
JobId = Annotated[str, Field(min_length=1, max_length=64)]


class AbortRequest(WireModel):
    """Kuwa's ``POST /v1.0/chat/abort`` body: the job ids to cancel (all of the caller's when absent)."""

    ids: Annotated[list[JobId], Field(max_length=MAX_ABORT_IDS)] | None = None


def parse_abort_request(body: bytes) -> AbortRequest:
    """An empty body, or ``{}``, aborts everything of the caller's; anything else is validated."""
    return parse_body(AbortRequest, body) if body.strip() else AbortRequest()


def parse_chat_request(body: bytes) -> ChatCompletionRequest:
    return parse_body(ChatCompletionRequest, body)


def parse_body(kind: type[WireT], body: bytes) -> WireT:
    """Parse and validate a request body as ``kind``; any problem is a 400 naming the parameter."""
    try:
        return kind.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def invalid_request(exc: ValidationError) -> InvalidRequest:
    first = exc.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return InvalidRequest("We could not parse the JSON body of your request.", code="invalid_json")
    if first["type"] == "model_type" and not first["loc"]:
        return InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    param = _param_name(first["loc"])
    message = f"Invalid value for '{param}': {first['msg']}." if param else first["msg"]
    code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
    return InvalidRequest(message, code=code, param=param or None)


def _param_name(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part in {"str", "list[dict[str,any]]", "none"} or "[" in part or part.startswith(("function-",
                                                                                                   "constrained-")):
            continue
        else:
            name += f".{part}" if name else part
    return name

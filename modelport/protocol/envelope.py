"""The versioned job envelope and the event union a worker sends back for each job (JSON only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field, TypeAdapter

from modelport.protocol.errors import ErrorBody

Task = Literal["chat", "completion", "embedding"]
MAX_INPUTS = 2048  # inputs (and prompts) one job may have: OpenAI's limit, checked at the gateway

ENVELOPE_VERSION = 3  # 3: jobs have a task (chat, completion, embedding)
# Every event names the run (attempt) of its job that produced it, counted from 1; VERDICT marks an event
# about the job that no run produced (its worker was lost, its attempts are used up).
VERDICT = 0


class GenerationParams(BaseModel):
    """What a backend generates from: the parameters the client set (validated at the gateway against
    OpenAI's bounds; None where unset) and, apart, the fields beyond OpenAI's it sent, which only an
    OpenAI-compatible upstream whose operator allowed them receives. ``task`` says which endpoint's job it
    is: a chat from ``messages``, a legacy completion from ``prompt`` (one choice set per prompt), or
    embeddings of ``input``."""

    task: Task = "chat"
    messages: list[dict[str, Any]] = Field(default_factory=list)
    prompt: list[str | list[int]] | None = None
    echo: bool | None = None
    suffix: str | None = None
    input: list[str | list[int]] | None = None
    dimensions: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def completion_limit(self) -> int | None:
        """The most tokens each choice may have (``max_completion_tokens``, or the older ``max_tokens``)."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def choices(self) -> int:
        return self.n or 1

    @property
    def stops(self) -> list[str]:
        return self.stop or []

    @property
    def response_type(self) -> str | None:
        return str(self.response_format.get("type")) if self.response_format else None

    @property
    def prompts(self) -> list[str | list[int]]:
        """A completion's prompts (each answered by ``choices`` choices, indexed prompt by prompt)."""
        return self.prompt or [""]

    def openai_fields(self) -> dict[str, Any]:
        """The OpenAI parameters the client set, as OpenAI's API takes them for the job's endpoint."""
        fields = self.model_dump(exclude_none=True, exclude={"extra", "task"})
        if self.task != "chat":
            del fields["messages"]
        return fields


class Job(BaseModel):
    """One chat request on its way to a worker."""

    v: int = ENVELOPE_VERSION
    id: str
    model: str
    params: GenerationParams
    reply_to: str
    deadline_ms: int
    user: str = ""
    user_id: int = 0
    queued_ms: int = 0  # when the gateway queued it (its clock)
    # the W3C trace context of the request's span when the request is traced (workers continue the trace)
    traceparent: str | None = Field(default=None, max_length=55)
    # the gateway reads event batches (see encode_batch); a worker sends a gateway of an earlier build, which
    # does not say so, one stream entry per event
    batches: bool = False


class ToolCallFragment(BaseModel):
    index: int
    id: str | None = None
    type: str | None = None
    function: dict[str, str] | None = None


class ChoiceDelta(BaseModel):
    index: int = 0
    content: str | None = None
    tool_calls: list[ToolCallFragment] | None = None
    finish_reason: str | None = None

    def absorb(self, later: ChoiceDelta) -> None:
        """Append a later delta of the same choice to this one, keeping order and every character."""
        if later.content:
            self.content = (self.content or "") + later.content
        for fragment in later.tool_calls or []:
            self._absorb_tool_call(fragment)
        if later.finish_reason is not None:
            self.finish_reason = later.finish_reason

    def _absorb_tool_call(self, fragment: ToolCallFragment) -> None:
        calls = self.tool_calls if self.tool_calls is not None else []
        self.tool_calls = calls
        same = next((call for call in calls if call.index == fragment.index), None)
        if same is None:
            calls.append(fragment.model_copy(deep=True))
            return
        same.id = same.id or fragment.id
        same.type = same.type or fragment.type
        if fragment.function:
            merged = dict(same.function or {})
            for key, text in fragment.function.items():
                merged[key] = merged.get(key, "") + text if key == "arguments" else merged.get(key) or text
            same.function = merged


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Delta(BaseModel):
    t: Literal["delta"] = "delta"
    choices: list[ChoiceDelta]
    # How many of the backend's deltas (about a token each) this event carries once merged: what a client
    # was sent, counted when a job ends without the worker's own count (a deadline, a lost worker).
    pieces: int = Field(default=1, ge=0)

    def absorb(self, later: Delta) -> None:
        self.pieces += later.pieces
        for choice in later.choices:
            same = next((mine for mine in self.choices if mine.index == choice.index), None)
            if same is None:
                self.choices.append(choice)
            else:
                same.absorb(choice)


class Done(BaseModel):
    t: Literal["done"] = "done"
    usage: Usage | None = None
    # an embedding job's vectors, in input order, each little-endian float32 in base64 (OpenAI's own
    # ``encoding_format: base64``): carried by the job's last event, so a job re-run never sends them twice
    embeddings: Annotated[list[str], Field(max_length=MAX_INPUTS)] | None = None
    # which of the LLM's deployments served it (its prices may differ); names are at most 64 characters
    deployment: str | None = Field(default=None, max_length=64)


class Failed(BaseModel):
    t: Literal["failed"] = "failed"
    error: ErrorBody
    usage: Usage | None = None
    deployment: str | None = Field(default=None, max_length=64)  # None when the gateway ended it


Event = Delta | Done | Failed
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Annotated[Event, Field(discriminator="t")])


def encode_event(event: Event) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


def decode_event(raw: bytes) -> Event:
    return EVENT_ADAPTER.validate_json(raw)


# An inbox entry carries one event (fields v, j: job id, a: attempt, s: sequence, e: the event's JSON) or, to a
# gateway whose jobs say ``batches``, every event one flush of a worker has for that gateway (fields v and b:
# a JSON array of [job id, attempt, sequence, event] in the order they were produced): one entry per gateway
# and flush instead of one per event.
Published = tuple[str, int, int, Event]


def encode_batch(events: list[Published]) -> bytes:
    return orjson.dumps([[job_id, attempt, sequence, event.model_dump(mode="json", exclude_none=True)]
                         for job_id, attempt, sequence, event in events])


def decode_batch(raw: bytes) -> list[tuple[str, int, int, object]]:
    """The batch's records, each event still to be validated (``EVENT_ADAPTER.validate_python``), so that an
    unreadable event fails its own job only; ValueError when the batch itself is not one."""
    records = orjson.loads(raw)
    if not isinstance(records, list):
        raise ValueError("an event batch is a JSON array")
    decoded = []
    for record in records:
        if not (isinstance(record, list) and len(record) == 4 and isinstance(record[0], str)
                and isinstance(record[1], int) and isinstance(record[2], int)):
            raise ValueError("an event batch's record is [job id, attempt, sequence, event]")
        decoded.append((record[0], record[1], record[2], record[3]))
    return decoded

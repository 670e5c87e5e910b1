"""Wire models of the OpenAI endpoints beside chat that run as jobs: ``/v1/embeddings`` and the legacy
``/v1/completions``, validated once at the gateway within OpenAI's bounds."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from modelport.protocol.envelope import MAX_INPUTS, GenerationParams
from modelport.protocol.openai_wire import (
    ExtraBounded,
    ModelName,
    Penalty,
    Probability,
    ShortText,
    StopSequence,
    StreamOptions,
    TokenCount,
)

MAX_CHOICES = 128  # choices a completion may ask for, over all its prompts
MAX_SUFFIX = 65_536
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for a legacy completion
TokenId = Annotated[int, Field(ge=0, lt=2**31)]
Text = Annotated[str, Field(min_length=1)]
Tokens = Annotated[list[TokenId], Field(min_length=1)]
Inputs = (Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)] | Tokens
          | Annotated[list[Tokens], Field(min_length=1, max_length=MAX_INPUTS)])


def as_list(value: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """One text or token array, or a list of them, as a list of them."""
    if isinstance(value, str):
        return [value]
    if all(isinstance(item, int) for item in value):
        return [[item for item in value if isinstance(item, int)]]
    return [item for item in value if not isinstance(item, int)]


def estimate(items: list[str | list[int]]) -> int:
    """Tokens the texts (about four characters a token) or token arrays amount to."""
    return sum(len(item) // 4 + 1 if isinstance(item, str) else len(item) for item in items)


class EmbeddingRequest(ExtraBounded):
    model: ModelName
    input: Inputs
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1, le=65_536)] | None = None
    user: ShortText | None = None

    @property
    def inputs(self) -> list[str | list[int]]:
        return as_list(self.input)

    def generation_params(self) -> GenerationParams:
        return GenerationParams(task="embedding", input=self.inputs, dimensions=self.dimensions, user=self.user,
                                extra=self.model_extra or {})


class CompletionRequest(ExtraBounded):
    model: ModelName
    prompt: Inputs | Literal[""]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: TokenCount | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Probability | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None
    best_of: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None
    stop: StopSequence | Annotated[list[StopSequence], Field(max_length=4)] | None = None
    echo: bool | None = None
    suffix: Annotated[str, Field(max_length=MAX_SUFFIX)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), lt=2**63)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]], Field(max_length=1024)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    user: ShortText | None = None

    @model_validator(mode="after")
    def servable(self) -> CompletionRequest:
        if self.best_of not in (None, 1, self.n or 1):
            raise ValueError("best_of other than n is not supported: choices are streamed as they are made")
        if self.logprobs:
            raise ValueError("log probabilities are not returned by this gateway")
        if len(self.prompts) * (self.n or 1) > MAX_CHOICES:
            raise ValueError(f"at most {MAX_CHOICES} choices (prompts times n) may be asked for at once")
        return self

    @property
    def prompts(self) -> list[str | list[int]]:
        return as_list(self.prompt)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def completion_reserve(self) -> int:
        return (self.max_tokens or DEFAULT_MAX_TOKENS) * (self.n or 1) * len(self.prompts)

    def generation_params(self) -> GenerationParams:
        """What the backend generates from: OpenAI's fields, the prompts as a list, the stop sequences as a
        list, at most 16 tokens a choice unless asked otherwise (OpenAI's default)."""
        extra = self.model_extra or {}
        fields = self.model_dump(mode="json", exclude_unset=True,
                                 exclude={"model", "stream", "stream_options", "best_of", "logprobs", "prompt", *extra})
        if isinstance(self.stop, str):
            fields["stop"] = [self.stop]
        fields["max_tokens"] = self.max_tokens or DEFAULT_MAX_TOKENS
        return GenerationParams(task="completion", prompt=self.prompts, **fields, extra=extra)

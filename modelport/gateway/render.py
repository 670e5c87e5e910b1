"""Turns a job's events into OpenAI bytes: SSE chunk frames (/v1 and the literal Kuwa /v1.0 flavour)
or one chat.completion body; ``BodyBuilder`` is what every endpoint's one-body answer is built by."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, Protocol

import orjson

from modelport.protocol.envelope import ChoiceDelta, Delta, Done, Usage
from modelport.protocol.errors import Cancelled, ErrorBody

DONE = b"data: [DONE]\n\n"
# Kuwa's Python client json-parses every ``data:`` line and stops at the line ``event: close``; the OpenAI
# SDKs stop at data ``[DONE]`` whatever the event name. This one frame ends the stream for both.
KUWA_DONE = b"event: close\ndata: [DONE]\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def error_frame(error: ErrorBody) -> bytes:
    return frame(orjson.dumps(error.envelope()))


def usage_dict(usage: Usage | None) -> dict[str, int]:
    usage = usage or Usage()
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def _tool_calls(choice: ChoiceDelta) -> list[dict[str, Any]]:
    return [call.model_dump(exclude_none=True) for call in choice.tool_calls or []]


class StreamRenderer(Protocol):
    comments: bool
    """Whether SSE comment lines may be sent (never to Kuwa clients, which parse frames literally)."""

    def delta(self, delta: Delta) -> bytes: ...

    def end(self, usage: Usage | None, extension: dict[str, Any] | None = None) -> bytes:
        """The stream's last frames; ``extension`` goes beside the usage (``x_modelport``: what it cost)."""

    def fail(self, error: ErrorBody) -> bytes: ...


class ChunkRenderer:
    """Standard ``chat.completion.chunk`` frames; deltas that arrived together become one frame."""

    comments = True
    object = "chat.completion.chunk"
    pending_usage = b',"usage":null}'  # how a chunk ends while the usage is still to come (include_usage)

    def __init__(self, job_id: str, model: str, created: int, include_usage: bool) -> None:
        head = orjson.dumps({"id": job_id, "object": self.object, "created": created, "model": model})
        self._head = head[:-1] + b',"choices":'
        self._tail = self.pending_usage if include_usage else b"}"
        self._include_usage = include_usage
        self._greeted: set[int] = set()

    def delta(self, delta: Delta) -> bytes:
        return frame(self._head + orjson.dumps([self._choice(choice) for choice in delta.choices]) + self._tail)

    def end(self, usage: Usage | None, extension: dict[str, Any] | None = None) -> bytes:
        if not self._include_usage:
            return DONE
        extra = b',"x_modelport":' + orjson.dumps(extension) if extension else b""
        return frame(self._head + b'[],"usage":' + orjson.dumps(usage_dict(usage)) + extra + b"}") + DONE

    def fail(self, error: ErrorBody) -> bytes:
        return error_frame(error) + DONE

    def _choice(self, choice: ChoiceDelta) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if choice.index not in self._greeted:
            self._greeted.add(choice.index)
            delta["role"] = "assistant"
        if choice.content is not None:
            delta["content"] = choice.content
        if choice.tool_calls:
            delta["tool_calls"] = _tool_calls(choice)
        return {"index": choice.index, "delta": delta, "logprobs": None, "finish_reason": choice.finish_reason}


class KuwaRenderer:
    """Frames Kuwa clients parse literally: ``data: {json}\\n\\n``, one character of text per frame (the
    guide's Python client prints only the last character of each), role ``assistant`` on every frame,
    the finish reason on the last text frame, ASCII-only JSON (safe for decoders that split multi-byte
    characters), and the stream ends with ``KUWA_DONE``."""

    comments = False

    def __init__(self, job_id: str, model: str, created: int, include_usage: bool) -> None:
        self._base = {"id": job_id, "object": "chat.completion.chunk", "created": created, "model": model}
        self._include_usage = include_usage
        self._held: dict[int, str] = {}

    def delta(self, delta: Delta) -> bytes:
        out = bytearray()
        for choice in delta.choices:
            text = self._held.pop(choice.index, "") + (choice.content or "")
            if text:
                for character in text[:-1]:
                    out += self._frame(choice.index, {"content": character}, None)
                self._held[choice.index] = text[-1]
            if choice.tool_calls:
                out += self._frame(choice.index, {"tool_calls": _tool_calls(choice)}, None)
            if choice.finish_reason is not None and choice.index in self._held:
                out += self._frame(choice.index, {"content": self._held.pop(choice.index)}, choice.finish_reason)
        return bytes(out)

    def end(self, usage: Usage | None, extension: dict[str, Any] | None = None) -> bytes:
        out = bytearray()
        for index, character in sorted(self._held.items()):
            out += self._frame(index, {"content": character}, "stop")
        self._held.clear()
        if self._include_usage:
            extra = {"x_modelport": extension} if extension else {}
            out += frame(self._dumps({**self._base, "choices": [], "usage": usage_dict(usage), **extra}))
        return bytes(out + KUWA_DONE)

    def fail(self, error: ErrorBody) -> bytes:
        """Kuwa clients parse every frame as a chunk: a cancelled job (aborted, or its client gone) ends like
        a finished one, with the held text, a last empty chunk saying why (``exit_code`` 1 and the error's
        code in ``modelport_end``) and the closing frame. Other failures send OpenAI's error object."""
        if error.code != Cancelled.default_code:
            return error_frame(error) + KUWA_DONE
        out = bytearray()
        for index, character in sorted(self._held.items()):
            out += self._frame(index, {"content": character}, None)
        self._held.clear()
        out += self._frame(0, {"content": ""}, "stop", exit_code=1, modelport_end=error.code)
        return bytes(out + KUWA_DONE)

    def _frame(self, index: int, delta: dict[str, Any], finish_reason: str | None, *, exit_code: int = 0,
               **extension: str) -> bytes:
        """One chunk of one choice; the last one of a choice (with its finish reason) carries Kuwa's
        ``exit_code``, 0 when the job succeeded."""
        choice: dict[str, Any] = {"index": index, "delta": {"role": "assistant", **delta}, "logprobs": None,
                                  "finish_reason": finish_reason}
        if finish_reason is not None:
            choice.update(exit_code=exit_code, **extension)
        return frame(self._dumps({**self._base, "choices": [choice]}))

    @staticmethod
    def _dumps(payload: dict[str, Any]) -> bytes:
        return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class BodyBuilder(ABC):
    """Accumulates a job's deltas into one JSON body (a request that does not stream), made once it is done."""

    def __init__(self) -> None:
        self.choices: dict[int, ChoiceDelta] = {}

    def add(self, delta: Delta) -> None:
        for choice in delta.choices:
            mine = self.choices.get(choice.index)
            if mine is None:
                self.choices[choice.index] = choice.model_copy(deep=True)
            else:
                mine.absorb(choice)

    @abstractmethod
    def body(self, done: Done) -> bytes: ...


class CompletionBuilder(BodyBuilder):
    """One ``chat.completion`` body; for Kuwa clients (``exit_codes``) each choice also carries Kuwa's
    ``exit_code``, 0: the job succeeded."""

    def __init__(self, job_id: str, model: str, created: int, exit_codes: bool = False) -> None:
        super().__init__()
        self._head = {"id": job_id, "object": "chat.completion", "created": created, "model": model}
        self._exit_codes = exit_codes

    def body(self, done: Done) -> bytes:
        choices = [self._choice(choice) for _, choice in sorted(self.choices.items())]
        if self._exit_codes:
            choices = [{**choice, "exit_code": 0} for choice in choices]
        return orjson.dumps({**self._head, "choices": choices, "usage": usage_dict(done.usage)})

    @staticmethod
    def _choice(choice: ChoiceDelta) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": choice.content, "refusal": None}
        if choice.tool_calls:
            message["tool_calls"] = [
                {"id": call.id, "type": call.type or "function", "function": call.function or {}}
                for call in sorted(choice.tool_calls, key=lambda call: call.index)
            ]
        elif choice.content is None:
            message["content"] = ""
        return {"index": choice.index, "message": message, "logprobs": None,
                "finish_reason": choice.finish_reason or "stop"}

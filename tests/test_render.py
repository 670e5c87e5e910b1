"""Delta merging and the renderings (chat chunks, Kuwa frames, one completion; embeddings; legacy completions),
without a server."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from modelport.gateway.endpoint_render import EmbeddingsBuilder, TextCompletionBuilder, TextCompletionRenderer
from modelport.gateway.render import DONE, ChunkRenderer, CompletionBuilder, KuwaRenderer
from modelport.protocol.envelope import ChoiceDelta, Delta, Done, ToolCallFragment, Usage
from modelport.protocol.vectors import pack


def text_delta(text: str, finish: str | None = None, index: int = 0) -> Delta:
    return Delta(choices=[ChoiceDelta(index=index, content=text, finish_reason=finish)])


def frames(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(part.removeprefix(b"data: ")) for part in raw.split(b"\n\n") if part.startswith(b"data: {")]


def test_merged_deltas_keep_every_character_and_tool_fragment() -> None:
    merged = text_delta("a")
    merged.absorb(text_delta("b"))
    merged.absorb(Delta(choices=[ChoiceDelta(index=1, content="x")]))
    merged.absorb(Delta(choices=[ChoiceDelta(tool_calls=[ToolCallFragment(index=0, id="c", function={
        "name": "f", "arguments": '{"a"'})])]))
    merged.absorb(Delta(choices=[ChoiceDelta(tool_calls=[ToolCallFragment(index=0, function={"arguments": ": 1}"})],
                                             finish_reason="tool_calls")]))
    first, second = merged.choices
    assert (first.content, second.content, first.finish_reason) == ("ab", "x", "tool_calls")
    assert first.tool_calls is not None and first.tool_calls[0].function == {"name": "f", "arguments": '{"a": 1}'}


def test_chunks_carry_role_once_and_usage_when_asked() -> None:
    renderer = ChunkRenderer("chatcmpl-1", "m", 1, include_usage=True)
    out = renderer.delta(text_delta("Hi")) + renderer.delta(text_delta("!", "stop")) + renderer.end(Usage(
        prompt_tokens=2, completion_tokens=3))
    chunks = frames(out)
    assert [chunk["choices"] for chunk in chunks][-1] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hi"}
    assert chunks[1]["choices"][0]["delta"] == {"content": "!"}
    assert out.endswith(b"data: [DONE]\n\n")


def test_kuwa_frames_hold_one_character_and_finish_on_the_last() -> None:
    renderer = KuwaRenderer("chatcmpl-1", "m", 1, include_usage=False)
    out = renderer.delta(text_delta("你好")) + renderer.delta(text_delta("!")) + renderer.end(None)
    contents = [(chunk["choices"][0]["delta"]["content"], chunk["choices"][0]["finish_reason"])
                for chunk in frames(out)]
    assert contents == [("你", None), ("好", None), ("!", "stop")]
    assert out.isascii() and out.endswith(b"event: close\ndata: [DONE]\n\n")


def test_completion_joins_choices_and_tool_calls() -> None:
    builder = CompletionBuilder("chatcmpl-1", "m", 1)
    builder.add(text_delta("Hel"))
    builder.add(text_delta("lo", "stop"))
    builder.add(Delta(choices=[ChoiceDelta(index=1, tool_calls=[ToolCallFragment(
        index=0, id="c1", type="function", function={"name": "f", "arguments": "{}"})], finish_reason="tool_calls")]))
    body = json.loads(builder.body(Done(usage=Usage(prompt_tokens=1, completion_tokens=2))))
    assert body["choices"][0]["message"]["content"] == "Hello"
    assert body["choices"][1]["message"]["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert body["choices"][1]["finish_reason"] == "tool_calls" and body["usage"]["total_tokens"] == 3


def test_embeddings_are_floats_or_the_base64_they_travel_in() -> None:
    vectors = [[0.5, -0.25, 1.0], [0.1, 0.2, 0.3]]
    done = Done(usage=Usage(prompt_tokens=4), embeddings=[pack(vector) for vector in vectors])
    floats = json.loads(EmbeddingsBuilder("e", "float").body(done))
    assert floats["object"] == "list" and floats["model"] == "e"
    assert floats["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert [row["index"] for row in floats["data"]] == [0, 1]
    assert floats["data"][0]["embedding"] == [0.5, -0.25, 1.0]
    assert [round(value, 6) for value in floats["data"][1]["embedding"]] == [0.1, 0.2, 0.3]
    encoded = json.loads(EmbeddingsBuilder("e", "base64").body(done))["data"][0]["embedding"]
    assert struct.unpack("<3f", base64.b64decode(encoded)) == (0.5, -0.25, 1.0)  # what the openai SDK decodes


def test_text_completions_stream_and_join() -> None:
    renderer = TextCompletionRenderer("cmpl-1", "m", 1, include_usage=True)
    raw = renderer.delta(text_delta("Hel")) + renderer.delta(text_delta("lo", "length"))
    raw += renderer.end(Usage(prompt_tokens=2, completion_tokens=2))
    chunks = frames(raw)
    assert [chunk["object"] for chunk in chunks] == ["text_completion"] * 3
    assert [(choice["text"], choice["finish_reason"]) for chunk in chunks[:2] for choice in chunk["choices"]] == [
        ("Hel", None), ("lo", "length")]
    assert chunks[2]["choices"] == [] and chunks[2]["usage"]["total_tokens"] == 4 and raw.endswith(DONE)
    builder = TextCompletionBuilder("cmpl-1", "m", 1)
    builder.add(text_delta("Hel"))
    builder.add(text_delta("lo", "stop"))
    body = json.loads(builder.body(Done(usage=Usage(prompt_tokens=2, completion_tokens=2))))
    assert body["choices"] == [{"text": "Hello", "index": 0, "logprobs": None, "finish_reason": "stop"}]

"""Delta merging and the three renderings (chunks, Kuwa frames, one completion), without a server."""

from __future__ import annotations

import json
from typing import Any

from modelport.gateway.render import ChunkRenderer, CompletionBuilder, KuwaRenderer
from modelport.protocol.envelope import ChoiceDelta, Delta, ToolCallFragment, Usage


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
    body = json.loads(builder.body(Usage(prompt_tokens=1, completion_tokens=2)))
    assert body["choices"][0]["message"]["content"] == "Hello"
    assert body["choices"][1]["message"]["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert body["choices"][1]["finish_reason"] == "tool_calls" and body["usage"]["total_tokens"] == 3

"""The OpenAI-compatible backend reads an upstream's SSE stream by what the network delivers: lines split
across reads are joined, the deltas of one read become one (every character and piece kept), usage and
[DONE] are recognised, and an endless line is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
import pytest

from modelport.protocol.envelope import Delta, Usage
from modelport.protocol.errors import UpstreamError
from modelport.workers.backends.openai_compat import MAX_LINE, _events


class Reads:
    """What an aiohttp response body delivers, read by read."""

    def __init__(self, *reads: bytes) -> None:
        self.reads = reads

    async def iter_any(self) -> AsyncIterator[bytes]:
        for data in self.reads:
            yield data


def chunk(text: str) -> bytes:
    body = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(body) + b"\r\n\r\n"


async def events(*reads: bytes) -> list[list[Delta | Usage]]:
    return [batch async for batch in _events(cast(Any, Reads(*reads)))]


async def test_one_read_of_many_chunks_is_one_delta_with_every_piece() -> None:
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3}}\n\n'
    [batch] = await events(chunk("al") + chunk("pha ") + chunk("beta") + usage + b"data: [DONE]\n\n")
    delta, counted = batch
    assert isinstance(delta, Delta) and delta.choices[0].content == "alpha beta" and delta.pieces == 3
    assert counted == Usage(prompt_tokens=3, completion_tokens=3)


async def test_a_line_split_across_reads_is_joined_and_each_read_is_sent_when_it_arrives() -> None:
    whole = chunk("你好") + chunk("世界")
    batches = await events(whole[:9], whole[9:90], whole[90:])  # the first chunk ends in the second read
    texts = ["".join(choice.content or "" for event in batch if isinstance(event, Delta) for choice in event.choices)
             for batch in batches]
    assert "".join(texts) == "你好世界" and len(batches) == 2
    assert sum(event.pieces for batch in batches for event in batch if isinstance(event, Delta)) == 2


async def test_a_last_line_without_its_newline_still_counts() -> None:
    [[delta]] = await events(chunk("end").rstrip())
    assert isinstance(delta, Delta) and delta.choices[0].content == "end"


async def test_an_endless_line_is_refused() -> None:
    with pytest.raises(UpstreamError, match="longer than"):
        await events(b"data: " + b"x" * (MAX_LINE + 1))

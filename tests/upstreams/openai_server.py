"""A fake OpenAI-compatible upstream speaking real HTTP (a raw ASGI app under uvicorn), for tests and
benchmarks. Its behaviour is chosen by the requested model name:

- ``chunks-N`` (default ``chunks-8``): N content chunks as fast as possible;
- ``slow-D-N``: N chunks, D ms apart;
- ``params``: one chunk holding the JSON of the parameters it received (model and messages left out)
  and of the Authorization and (when sent) traceparent headers;
- ``request``: the same with the messages it received;
- ``tools``: a streamed tool call to ``get_weather``;
- ``status-S``: an HTTP error S with OpenAI's error body.

``/v1/completions`` streams the same pieces as text, for every prompt and choice (``params`` shows the
parameters, prompt included); ``/v1/embeddings`` answers each input with a vector of ``dimensions`` (4 by
default) values drawn from its text, as base64 or floats as asked, and counts a token a word.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import struct
import time
from typing import Any

import orjson
import uvicorn

Send = Any
Receive = Any

WORDS = ["alpha ", "beta ", "gamma ", "delta ", "你好 ", "世界 "]


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _pieces(model: str, body: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    kind, _, rest = model.partition("-")
    if kind in ("params", "request"):  # what reached the upstream: its parameters (and, "request", messages)
        hidden = {"model", "stream"} | ({"messages"} if kind == "params" else set())
        shown = {key: value for key, value in body.items() if key not in hidden}
        return [{"role": "assistant", "content": orjson.dumps(shown, option=orjson.OPT_SORT_KEYS).decode()}], 0.0
    if kind == "tools":
        call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        parts = ['{"city"', ': "Tai', 'pei"}']
        return [{"role": "assistant", "tool_calls": [call]}] + [
            {"tool_calls": [{"index": 0, "function": {"arguments": part}}]} for part in parts
        ], 0.0
    delay, count = 0.0, 8
    if kind == "slow":
        delay_text, _, count_text = rest.partition("-")
        delay, count = float(delay_text) / 1000, int(count_text)
    elif kind == "chunks" and rest:
        count = int(rest)
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or count
    return [{"content": WORDS[i % len(WORDS)]} for i in range(min(count, limit))], delay


async def _read_body(receive: Receive) -> bytes:
    body: bytes = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _respond_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": orjson.dumps(payload)})


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = orjson.loads(await _read_body(receive))
    headers = dict(scope["headers"])
    body["authorization"] = headers.get(b"authorization", b"").decode()
    if b"traceparent" in headers:  # a traced worker's request names its span
        body["traceparent"] = headers[b"traceparent"].decode()
    model = str(body.get("model", ""))
    if model.startswith("status-"):
        status = int(model.split("-")[1])
        message = "This model's maximum context length is 8 tokens" if status == 400 else f"upstream said {status}"
        await _respond_json(send, status, {"error": {"message": message, "type": "upstream"}})
        return
    if scope["path"].endswith("/embeddings"):
        await _respond_json(send, 200, _embeddings(model, body))
        return
    pieces, delay = _pieces(model, body)
    if scope["path"].endswith("/completions") and not scope["path"].endswith("/chat/completions"):
        await _stream_text(send, model, body, pieces)
        return
    if not body.get("stream"):
        text = "".join(piece.get("content", "") for piece in pieces)
        await _respond_json(send, 200, {"id": "chatcmpl-upstream", "object": "chat.completion", "model": model,
                                        "choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant", "content": text}}],
                                        "usage": {"prompt_tokens": 3, "completion_tokens": len(pieces),
                                                  "total_tokens": 3 + len(pieces)}})
        return
    await _stream(send, model, body, pieces, delay)


async def _stream(send: Send, model: str, body: dict[str, Any], pieces: list[dict[str, Any]], delay: float) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    finish = "tool_calls" if model == "tools" else "stop"
    for position, piece in enumerate(pieces):
        last = position == len(pieces) - 1
        await send({"type": "http.response.body", "body": _chunk(model, piece, finish if last else None),
                    "more_body": True})
        if delay and not last:
            await asyncio.sleep(delay)
    tail = b""
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 3, "completion_tokens": len(pieces), "total_tokens": 3 + len(pieces)}
        tail = b"data: " + orjson.dumps({"id": "chatcmpl-upstream", "object": "chat.completion.chunk",
                                         "model": model, "choices": [], "usage": usage}) + b"\n\n"
    await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})


def _embeddings(model: str, body: dict[str, Any]) -> dict[str, Any]:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    if inputs and isinstance(inputs[0], int):
        inputs = [inputs]
    texts = [item if isinstance(item, str) else " ".join(map(str, item)) for item in inputs]
    size = int(body.get("dimensions") or 4)
    data = []
    for index, text in enumerate(texts):
        vector = [(len(text) + position) / 100 for position in range(size)]
        packed = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
        data.append({"object": "embedding", "index": index,
                     "embedding": packed if body.get("encoding_format") == "base64" else vector})
    tokens = sum(len(text.split()) for text in texts)
    return {"object": "list", "data": data[::-1], "model": model,  # out of order: clients sort by index
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def _stream_text(send: Send, model: str, body: dict[str, Any], pieces: list[dict[str, Any]]) -> None:
    """A legacy completion stream: each piece's text, for every prompt and choice."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    prompts = body["prompt"] if isinstance(body["prompt"], list) and not isinstance(body["prompt"][0], int) else [0]
    frames = b""
    for index in range(len(prompts) * int(body.get("n") or 1)):
        for position, piece in enumerate(pieces):
            finish = "stop" if position == len(pieces) - 1 else None
            frames += b"data: " + orjson.dumps({"id": "cmpl-upstream", "object": "text_completion", "model": model,
                                                "created": int(time.time()), "choices": [
                                                    {"index": index, "text": piece.get("content", ""),
                                                     "logprobs": None, "finish_reason": finish}]}) + b"\n\n"
    choices = len(prompts) * int(body.get("n") or 1)
    usage = {"prompt_tokens": 3, "completion_tokens": len(pieces) * choices, "total_tokens": 3 + len(pieces) * choices}
    frames += b"data: " + orjson.dumps({"id": "cmpl-upstream", "object": "text_completion", "model": model,
                                        "choices": [], "usage": usage}) + b"\n\n"
    await send({"type": "http.response.body", "body": frames + b"data: [DONE]\n\n"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()

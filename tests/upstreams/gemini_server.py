"""A fake Gemini REST endpoint speaking ``:streamGenerateContent?alt=sse`` over real HTTP, close enough
for the google-genai SDK. Behaviour by model name:

- ``echo``: a first chunk whose text is the JSON of what arrived (system instruction, roles, parts,
  generation config, API key), then ``" done"`` with STOP and usage;
- ``safety``: some text, then a candidate stopped for SAFETY;
- ``blocked``: the prompt itself blocked (``promptFeedback.blockReason``);
- ``quota``: HTTP 429 RESOURCE_EXHAUSTED; ``badkey``: HTTP 400 "API key not valid"; ``denied``: HTTP 401.

``:batchEmbedContents`` answers each request's text with ``outputDimensionality`` (3 by default) values
``len(text) / 10 + position``; ``:countTokens`` counts a token a word.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvicorn

from tests.upstreams.openai_server import Receive, Send, _read_body

ERRORS = {
    "quota": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "badkey": (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
    "denied": (401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
}
USAGE = {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10}


def _candidate(text: str | None, finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"index": 0}
    if text is not None:
        candidate["content"] = {"role": "model", "parts": [{"text": text}]}
    if finish:
        candidate["finishReason"] = finish
    return candidate


def _chunks(model: str, body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    if model == "echo":
        seen = {"system": body.get("systemInstruction"), "contents": body.get("contents"),
                "config": body.get("generationConfig"), "key": key}
        return [{"candidates": [_candidate(orjson.dumps(seen).decode())]},
                {"candidates": [_candidate(" done", "STOP")], "usageMetadata": USAGE}]
    if model == "safety":
        return [{"candidates": [_candidate("Partial answer")]},
                {"candidates": [_candidate(None, "SAFETY")], "usageMetadata": USAGE}]
    if model == "blocked":
        return [{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": USAGE}]
    return [{"candidates": [_candidate("Hello from Gemini", "STOP")], "usageMetadata": USAGE}]


def _text(content: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for part in content.get("parts", []))


def _embedded(body: dict[str, Any]) -> dict[str, Any]:
    return {"embeddings": [{"values": [len(_text(request["content"])) / 10 + position
                                       for position in range(request.get("outputDimensionality") or 3)]}
                           for request in body["requests"]]}


def _counted(body: dict[str, Any]) -> dict[str, Any]:
    return {"totalTokens": sum(len(part.get("text", "").split()) for content in body.get("contents", [])
                               for part in content.get("parts", []))}


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = orjson.loads(await _read_body(receive))
    model = scope["path"].rsplit("/", 1)[-1].split(":")[0]
    key = dict(scope["headers"]).get(b"x-goog-api-key", b"").decode()
    if model in ERRORS:
        status, reason, message = ERRORS[model]
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body",
                    "body": orjson.dumps({"error": {"code": status, "message": message, "status": reason}})})
        return
    method = scope["path"].rsplit(":", 1)[-1]
    if method in ("batchEmbedContents", "countTokens"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": orjson.dumps(_embedded(body) if method == "batchEmbedContents"
                                                                       else _counted(body))})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    for chunk in _chunks(model, body, key):
        await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk) + b"\r\n\r\n",
                    "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

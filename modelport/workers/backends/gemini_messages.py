"""OpenAI chat messages and parameters as Gemini contents and generation config."""

from __future__ import annotations

import base64
from typing import Any

from google.genai import types

from modelport.protocol.envelope import GenerationParams
from modelport.protocol.errors import InvalidRequest


def contents_and_config(params: GenerationParams) -> tuple[list[types.Content], types.GenerateContentConfig]:
    system: list[str] = []
    contents: list[types.Content] = []
    for position, message in enumerate(params.messages):
        role = message["role"]
        if role in ("system", "developer"):
            system.extend(part.text or "" for part in _parts(message.get("content"), position))
        elif role in ("user", "assistant"):
            contents.append(types.Content(role="model" if role == "assistant" else "user",
                                          parts=_parts(message.get("content"), position)))
        else:
            raise InvalidRequest(f"The gemini backend does not take '{role}' messages.",
                                 param=f"messages[{position}].role")
    if not contents:
        raise InvalidRequest("Gemini needs at least one user message.", param="messages")
    return contents, _config(params, "\n\n".join(system) or None)


def _config(params: GenerationParams, system: str | None) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        system_instruction=system,
        temperature=params.temperature,
        top_p=params.top_p,
        max_output_tokens=params.completion_limit,
        stop_sequences=params.stop,
        seed=params.seed,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        response_mime_type="application/json" if params.response_type in ("json_object", "json_schema") else None,
    )


def _parts(content: str | list[dict[str, Any]] | None, position: int) -> list[types.Part]:
    if content is None or isinstance(content, str):
        return [types.Part(text=content or "")]
    parts = []
    for index, part in enumerate(content):
        if part["type"] == "text":
            parts.append(types.Part(text=str(part.get("text", ""))))
        elif part["type"] == "image_url":
            parts.append(_image(str((part.get("image_url") or {}).get("url", "")), f"messages[{position}].content"
                                                                                  f"[{index}].image_url"))
        else:
            raise InvalidRequest(f"The gemini backend does not take '{part['type']}' content parts.",
                                 param=f"messages[{position}].content[{index}].type")
    return parts


def _image(url: str, param: str) -> types.Part:
    """Only inline images (``data:`` URLs) reach Gemini without an upload step."""
    header, _, data = url.partition(",")
    if not header.startswith("data:") or ";base64" not in header:
        raise InvalidRequest("The gemini backend takes images as base64 data: URLs.", param=param)
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise InvalidRequest("The image data is not valid base64.", param=param) from None
    return types.Part(inline_data=types.Blob(mime_type=header[5:].split(";")[0], data=raw))

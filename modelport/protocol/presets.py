"""Presets (Kuwa's bots): their settings, validated once for every writer, what they do to a chat request,
and Kuwa's botfile text read into them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelport.protocol.errors import InvalidRequest
from modelport.protocol.openai_wire import (
    MAX_BOTFILE,
    MAX_COMPLETION_TOKENS,
    MAX_STOP_LENGTH,
    ChatCompletionRequest,
    WireModel,
    invalid_request,
)

MAX_PROMPT_TEXT = 32_768
PromptText = Annotated[str, Field(max_length=MAX_PROMPT_TEXT)]
# Kuwa names its model for a bot ``.bot/NAME``; its client's default, ``.bot/.default``, is the preset
# named ``default``.
BOT_PREFIX = ".bot/"


class PresetSettings(BaseModel):
    """A system prompt that comes first, text put around the user's last prompt, and parameters the client
    did not set; ``max_tokens`` is also the most the client may ask for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system_prompt: PromptText = ""
    before_prompt: PromptText = ""
    after_prompt: PromptText = ""
    client_system: bool = True
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=MAX_COMPLETION_TOKENS)] | None = None
    stop: Annotated[list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_LENGTH)]], Field(max_length=4)] = []

    @classmethod
    def checked(cls, values: Mapping[str, Any], param: str | None = None) -> PresetSettings:
        """Settings from loosely typed values (CLI flags, form fields, botfile text); a bad one is a 400
        naming it (or ``param``, when given)."""
        try:
            return cls.model_validate(values, strict=False)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            field = str(first["loc"][0])
            raise InvalidRequest(f"Invalid value for '{field}': {first['msg']}.", param=param or field) from None

    def apply(self, chat: ChatCompletionRequest, name: str) -> ChatCompletionRequest:
        """The request as the preset ``name`` makes it."""
        messages = [message.model_dump(exclude_unset=True) for message in chat.messages]
        if not self.client_system and any(message["role"] in ("system", "developer") for message in messages):
            raise InvalidRequest(f"The preset '{name}' does not take system messages.", param="messages")
        if self.before_prompt or self.after_prompt:
            _wrap_last_user_prompt(messages, self.before_prompt, self.after_prompt)
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        update: dict[str, Any] = {"messages": messages}
        for field in ("temperature", "top_p"):
            if getattr(chat, field) is None and getattr(self, field) is not None:
                update[field] = getattr(self, field)
        if chat.stop is None and self.stop:
            update["stop"] = list(self.stop)
        if self.max_tokens is not None:
            wanted = chat.completion_limit
            limit_field = "max_completion_tokens" if chat.max_completion_tokens is not None else "max_tokens"
            update[limit_field] = self.max_tokens if wanted is None else min(wanted, self.max_tokens)
        try:
            return ChatCompletionRequest.model_validate({**chat.model_dump(exclude_unset=True), **update})
        except ValidationError as exc:  # e.g. the preset's system message is one more than the most allowed
            raise invalid_request(exc) from None


def _wrap_last_user_prompt(messages: list[dict[str, Any]], before: str, after: str) -> None:
    for message in reversed(messages):
        if message["role"] != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = ([{"type": "text", "text": before}] if before else []) + content + (
                [{"type": "text", "text": after}] if after else [])
        else:
            message["content"] = before + (content or "") + after
        return


BOTFILE_COMMAND = re.compile(r"^(FROM|PROCESS-BOT|ADAPTER|LICENSE|TEMPLATE|SYSTEM|PARAMETER|MESSAGE|BEFORE-PROMPT|"
                             r"AFTER-PROMPT|PROMPTS|AUTO-PROMPTS|START-PROMPTS|WELCOME|NEXT|BEFORE-RESPONSE|"
                             r"AFTER-RESPONSE|INPUT-BOT|INPUT-PREFIX|INPUT-SUFFIX|OUTPUT-BOT|OUTPUT-PREFIX|"
                             r"OUTPUT-SUFFIX|SCRIPT)(?:\s+|$)(.*)$", re.IGNORECASE)
TEXT_COMMANDS = {"system": "system_prompt", "before-prompt": "before_prompt", "after-prompt": "after_prompt"}
PARAMETERS = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_tokens",
              "num_predict": "max_tokens", "stop": "stop"}


def parse_botfile(text: str) -> PresetSettings:
    """Kuwa's botfile (modelfile) text as preset settings: ``SYSTEM``, ``BEFORE-PROMPT`` and ``AFTER-PROMPT``
    (the first of each counts; arguments may continue on the following lines or be ``\"\"\"``-quoted) and
    ``PARAMETER name value`` for temperature, top_p, max_tokens (or num_predict) and stop (``llm_`` prefixes
    allowed). Other commands belong to Kuwa's executors and are ignored; a bad value is a 400. Its length is
    bounded where the request is parsed (``openai_wire.MAX_BOTFILE``)."""
    values: dict[str, Any] = {}
    stops: list[str] = []
    for name, argument in _commands(text):
        if name in TEXT_COMMANDS:
            values.setdefault(TEXT_COMMANDS[name], argument)
        elif name == "parameter":
            key, _, value = argument.partition(" ")
            field = PARAMETERS.get(key.lower().removeprefix("llm_"))
            if field == "stop":
                stops.append(_unquote(value.strip()))
            elif field is not None:
                values[field] = value.strip()
    if stops:
        values["stop"] = stops
    return PresetSettings.checked(values, param="botfile")


def _commands(text: str) -> list[tuple[str, str]]:
    """The botfile's commands, lower-cased, each with its (unquoted) argument; comments end a command."""
    commands: list[list[str]] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        stripped = line.strip()
        found = BOTFILE_COMMAND.match(stripped)
        if stripped.startswith("#"):
            commands.append(["#", ""])
        elif found:
            commands.append([found.group(1).lower(), found.group(2)])
        elif commands and commands[-1][0] != "#":
            commands[-1][1] += "\n" + line
    return [(name, _unquote(argument.strip())) for name, argument in commands]


def _unquote(text: str) -> str:
    for quote in ('"""', '"'):
        if len(text) >= 2 * len(quote) and text.startswith(quote) and text.endswith(quote):
            return text[len(quote):-len(quote)]
    return text


def bot_name(model: str) -> str | None:
    """The preset a Kuwa model name ``.bot/NAME`` calls (None for any other name)."""
    if not model.startswith(BOT_PREFIX):
        return None
    name = model.removeprefix(BOT_PREFIX)
    return "default" if name == ".default" else name


class KuwaBotRequest(WireModel):
    """Kuwa's ``POST /api/user/create/bot`` body (its ``react_btn`` and ``bot_type`` mean nothing here).
    Visibility as Kuwa numbers it: 0 system, 1 community, 2 group, 3 private."""

    llm_access_code: Annotated[str, Field(min_length=1, max_length=256)]
    bot_name: Annotated[str, Field(min_length=1, max_length=128)]
    modelfile: Annotated[str, Field(max_length=MAX_BOTFILE)] | None = None
    bot_describe: Annotated[str, Field(max_length=1024)] | None = None
    visibility: Annotated[int, Field(ge=0, le=3)] = 3

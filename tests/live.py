"""The shared live installation's shape: its models, tools and tokens."""

from __future__ import annotations

from dataclasses import dataclass

from openai.types.chat import ChatCompletionToolParam

from tests.system import System

TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]


@dataclass
class Live:
    system: System
    base: str
    token: str
    other_token: str


UPSTREAM_MODELS = {"oc": "chunks-8", "oc-tools": "tools", "oc-params": "params", "oc-request": "request",
                   "oc-401": "status-401",
                   "oc-429": "status-429", "oc-400": "status-400"}
EMBEDDING_MODELS = ("fake-embed", "oc-embed")

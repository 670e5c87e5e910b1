"""OpenAI's own schemas (a cut of its published OpenAPI spec, see tests/openapi/), as validators of answers."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMAS = Path(__file__).resolve().parent / "openapi" / "schemas.json"


def _nullable(node: Any) -> Any:
    """The spec mixes OpenAPI 3.0's ``nullable: true`` into JSON Schema; say it in JSON Schema's words."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if node.pop("nullable", False):
        if "type" in node:
            node["type"] = [node["type"], "null"] if isinstance(node["type"], str) else [*node["type"], "null"]
        if "enum" in node:
            node["enum"] = [*node["enum"], None]
        if "$ref" in node or "allOf" in node or "anyOf" in node or "oneOf" in node:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


@functools.cache
def validator(name: str) -> Draft202012Validator:
    document = _nullable(json.loads(SCHEMAS.read_text()))
    registry = Registry().with_resource("spec", Resource.from_contents(document, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"spec#/components/schemas/{name}"}, registry=registry)


def problems(name: str, instance: Any) -> list[str]:
    """What makes ``instance`` not a valid ``name`` (empty when it is one)."""
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in
            validator(name).iter_errors(instance)]


@functools.cache
def _event_schemas() -> dict[str, str]:
    schemas = json.loads(SCHEMAS.read_text())["components"]["schemas"]
    named = (ref["$ref"].rsplit("/", 1)[1] for ref in schemas["ResponseStreamEvent"]["anyOf"])
    return {kind: name for name in named for kind in schemas[name]["properties"]["type"].get("enum", [])}


def event_problems(event: dict[str, Any]) -> list[str]:
    """What makes a Responses stream event not valid as the event its ``type`` names (the union's own
    message would only say that it matches none)."""
    name = _event_schemas().get(event.get("type", ""))
    return [f"{event.get('type')}: no such event"] if name is None else problems(name, event)

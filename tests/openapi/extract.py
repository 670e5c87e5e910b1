"""Cut OpenAI's published OpenAPI spec (github.com/openai/openai-openapi, MIT licence in LICENSE) down to the
schemas ModelPort's answers are checked against and everything they refer to:
``python -m tests.openapi.extract openapi.json COMMIT > tests/openapi/schemas.json``."""

from __future__ import annotations

import json
import sys
from typing import Any

ROOTS = ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse", "ErrorResponse",
         "ListModelsResponse", "Model", "CreateEmbeddingResponse", "CreateCompletionResponse", "Response",
         "ResponseStreamEvent", "ResponseItemList")


def references(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[1]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(references(value) for value in node))
    return set()


def closure(schemas: dict[str, Any], roots: tuple[str, ...]) -> dict[str, Any]:
    wanted, seen = list(roots), set[str]()
    while wanted:
        name = wanted.pop()
        if name not in seen:
            seen.add(name)
            wanted.extend(references(schemas[name]) - seen)
    return {name: schemas[name] for name in sorted(seen)}


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    subset = closure(spec["components"]["schemas"], ROOTS)
    json.dump({"source": f"https://github.com/openai/openai-openapi/blob/{sys.argv[2]}/openapi.json",
               "openapi": spec["openapi"], "components": {"schemas": subset}}, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()

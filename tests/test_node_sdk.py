"""The official openai Node SDK (pinned in tests/node, installed by ``make deps``) against the live gateway:
embeddings, legacy completions and the Responses API, as a JavaScript program calls them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.live import Live

NODE = Path(__file__).parent / "node"
FAKE_REPLY = "Hello from the fake model. 你好，世界！"


def test_the_node_sdk_uses_every_new_endpoint(live: Live) -> None:
    run = subprocess.run(["node", str(NODE / "sdk_check.mjs"), f"{live.base}/v1", live.token], capture_output=True,
                         text=True, timeout=120, check=False, cwd=NODE)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    embedding = seen["embedding"]
    assert embedding["length"] == 8 and embedding["tokens"] == 4 and embedding["batch"] == [0, 1]
    assert embedding["batchTokens"] == 3 and embedding["first"] == seen["embeddingAgain"]  # base64 decoded as floats
    assert seen["completion"] == {"text": "Hello from the ", "finish": "length", "tokens": 3,
                                  "streamed": "alpha beta gamma delta 你好 世界 alpha beta "}
    responses = seen["responses"]
    assert responses["text"] == responses["helperText"] == responses["finalText"] == FAKE_REPLY
    assert responses["types"][0] == "response.created" and responses["types"][-1] == "response.completed"
    assert responses["continued"] == 3 and responses["retrieved"] is True and responses["deleted"] == 404
    assert responses["call"] == {"type": "function_call", "name": "get_weather"}
    assert responses["afterCall"] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}

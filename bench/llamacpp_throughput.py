"""Tokens per second of the bundled Gemma 3 270M: llama-cpp-python called directly versus the same model
behind ModelPort (gateway + Redis + llamacpp worker), same prompt and settings, in one run.

Run with ``python -m bench.llamacpp_throughput`` (after ``make deps``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from llama_cpp import Llama

from modelport.workers.backends.llamacpp import LlamaCppBackend, resolve_model_path
from modelport.workers.backends.llamacpp_config import BUNDLED, LlamaCppConfig
from tests.servers import RedisServer
from tests.system import System

STORY = "{{ bos_token }}Once upon a time, in a small village by the sea,"
MESSAGES = [{"role": "user", "content": "Tell me a story."}]
N_CTX = 1024


def direct_rates(tokens: int, runs: int) -> list[float]:
    backend = LlamaCppBackend(LlamaCppConfig(chat_template=STORY, n_ctx=N_CTX))
    asyncio.run(backend.start())
    prompt = backend.prompt_tokens(MESSAGES)
    asyncio.run(backend.close())
    llm = Llama(model_path=str(resolve_model_path(BUNDLED)), n_ctx=N_CTX, verbose=False)
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        result = llm.create_completion(prompt, max_tokens=tokens, temperature=0, stream=False)
        assert isinstance(result, dict)
        rates.append(result["usage"]["completion_tokens"] / (time.perf_counter() - started))
    del llm
    gc.collect()
    return rates


def gateway_rates(tokens: int, runs: int) -> list[float]:
    redis_server = RedisServer()
    redis_server.start()
    root = Path(tempfile.mkdtemp(prefix="modelport-llama-bench-"))
    system = System(f"sqlite:///{root / 'db.sqlite'}", redis_server, root, MODELPORT_LOG_LEVEL="WARNING")
    try:
        system.cli("llm", "add", "story", "--backend", "llamacpp", "--config",
                   json.dumps({"chat_template": STORY, "n_ctx": N_CTX}))
        token = system.user_with_token("story")
        base = system.gateway()
        system.workers("story")
        rates = []
        for _ in range(runs):
            started = time.perf_counter()
            answer = httpx.post(f"{base}/v1/chat/completions", timeout=300,
                                headers={"Authorization": f"Bearer {token}"},
                                json={"model": "story", "messages": MESSAGES, "max_tokens": tokens,
                                      "temperature": 0, "stream": True, "stream_options": {"include_usage": True}})
            elapsed = time.perf_counter() - started
            usage = json.loads(answer.text.split("data: ")[-2])["usage"]
            rates.append(usage["completion_tokens"] / elapsed)
        return rates
    finally:
        system.stop()
        redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    direct = statistics.median(direct_rates(args.tokens, args.runs))
    through = statistics.median(gateway_rates(args.tokens, args.runs))
    print(f"{args.tokens} tokens, median of {args.runs} runs, greedy, same prompt")
    print(f"  llama-cpp-python directly: {direct:6.1f} tokens/s")
    print(f"  through ModelPort:         {through:6.1f} tokens/s  ({through / direct:.1%} of direct)")


if __name__ == "__main__":
    main()

"""A model whose workers scale to zero (`llm set --scale-to-zero`): with no live worker its requests wait in
the queue, counted by the depth an autoscaler reads, and the first worker to start serves them; other models
still answer 503 at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.servers import RedisServer
from tests.system import System


@pytest.fixture(scope="module")
def cold(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[System]:
    system = System(f"sqlite:///{tmp_path_factory.mktemp('cold') / 'db.sqlite'}", redis_server, logs)
    system.cli("llm", "add", "cold", "--backend", "fake", "--scale-to-zero")
    system.cli("llm", "add", "warm-only", "--backend", "fake")
    yield system
    system.stop()


def test_a_request_waits_for_the_first_worker_of_a_model_that_scales_to_zero(cold: System) -> None:
    token = cold.user_with_token("cold")
    base = cold.gateway()
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=30)
    answers: list[str] = []

    def ask() -> None:
        stream = client.chat.completions.create(model="cold", messages=[{"role": "user", "content": "hi"}],
                                                stream=True)
        answers.append("".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))

    asking = threading.Thread(target=ask)
    asking.start()
    deadline = time.monotonic() + 10
    while 'modelport_queue_depth{model="cold"} 1.0' not in httpx.get(f"{base}/metrics").text:
        assert time.monotonic() < deadline, "the waiting request is not counted in the queue depth"
        time.sleep(0.1)
    time.sleep(1)
    assert asking.is_alive() and not answers, "the request must wait for a worker, not fail"
    cold.worker("cold")
    asking.join(timeout=20)
    assert answers and answers[0], "the first worker serves the waiting request"
    assert 'modelport_queue_depth{model="cold"} 0.0' in httpx.get(f"{base}/metrics").text


def test_a_stream_waiting_for_the_first_worker_hears_so_until_it_starts(cold: System) -> None:
    cold.cli("llm", "add", "colder", "--backend", "fake", "--scale-to-zero")
    token = cold.user_with_token("colder")
    base = cold.gateway()
    lines: list[str] = []

    def listen() -> None:
        with httpx.stream("POST", f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                          timeout=30, json={"model": "colder", "stream": True,
                                            "messages": [{"role": "user", "content": "hi"}]}) as response:
            lines.extend(line for line in response.iter_lines() if line)

    listening = threading.Thread(target=listen)
    listening.start()
    deadline = time.monotonic() + 10
    while not lines:  # the headers and the first comment come at once, with no worker yet
        assert time.monotonic() < deadline, "a stream waiting for a worker heard nothing"
        time.sleep(0.05)
    assert lines[0] == ": waiting for a worker to start"
    cold.worker("colder")
    listening.join(timeout=20)
    assert lines[-1] == "data: [DONE]" and any(line.startswith("data: {") for line in lines)


def test_without_the_mark_no_worker_is_a_fast_503(cold: System) -> None:
    cold.cli("llm", "set", "warm-only", "--scale-to-zero")
    cold.cli("llm", "set", "warm-only", "--no-scale-to-zero")
    assert "scale_to_zero" in cold.cli("llm", "show", "warm-only")
    token = cold.user_with_token("warm-only")
    base = cold.gateway()
    started = time.monotonic()
    answer = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"}, timeout=10,
                        json={"model": "warm-only", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "no_worker"
    assert time.monotonic() - started < 2

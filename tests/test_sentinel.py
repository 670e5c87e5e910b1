"""ModelPort on a Sentinel-managed Redis (a primary, a replica and three Sentinels): gateways, workers and the
CLI find the primary through the Sentinels; the queue, limits, abort and revocation work there; and when
the primary is killed mid-load, every request ends (answered, or with one clean error: none hangs) and new
requests succeed once the Sentinels have promoted the replica."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
import redis
from pydantic import ValidationError

from modelport.settings import CommonSettings
from tests.sentinel_servers import SentinelRedis
from tests.system import System

HI = [{"role": "user", "content": "hi"}]
LOAD = 24  # streams running when the primary dies


@dataclass
class Sentinelled:
    redis: SentinelRedis
    system: System
    base: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def sentinelled(tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[Sentinelled]:
    server = SentinelRedis()
    server.start()
    system = System(f"sqlite:///{tmp_path_factory.mktemp('sentinel') / 'db.sqlite'}", server, logs, **server.env)
    system.cli("llm", "add", "quick", "--backend", "fake")
    system.cli("llm", "add", "slow", "--backend", "fake", "--delay-ms", "100", "--chunks", "40", "--max-queue", "512")
    system.cli("group", "add", "team")
    system.cli("user", "add", "alice")
    system.cli("user", "join", "alice", "team")
    for model in ("quick", "slow"):
        system.cli("group", "grant", "team", model)
    token = system.cli("token", "create", "alice").strip().splitlines()[-1]
    system.workers("quick", "slow")
    yield Sentinelled(server, system, system.gateway(), token)
    system.stop()
    server.stop()


def test_requests_stream_through_the_primary_the_sentinels_name(sentinelled: Sentinelled) -> None:
    client = openai.OpenAI(base_url=f"{sentinelled.base}/v1", api_key=sentinelled.token, max_retries=0)
    stream = client.chat.completions.create(model="quick", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    primary = redis.Redis(port=sentinelled.redis.primary_port(), password=sentinelled.redis.password)
    names = {entry["name"] for entry in primary.client_list()}
    primary.close()
    assert any(name.startswith("mp-gateway-") for name in names) and any(name.startswith("mp-worker-")
                                                                         for name in names)


def test_abort_limits_and_revocation_work_on_the_sentinel_primary(sentinelled: Sentinelled) -> None:
    with httpx.stream("POST", f"{sentinelled.base}/v1.0/chat/completions", headers=sentinelled.headers,
                      timeout=30, json={"model": "slow", "messages": HI, "stream": True}) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        aborted = httpx.post(f"{sentinelled.base}/v1.0/chat/abort", headers=sentinelled.headers,
                             json={"ids": [stream.headers["x-request-id"]]})
        rest = list(lines)
    assert aborted.json() == {"object": "chat.abort", "cancelled": 1}
    assert json.loads([line for line in rest if line.startswith("data: {")][-1][6:])["choices"][0]["exit_code"] == 1
    system = sentinelled.system
    system.cli("user", "add", "bob")
    system.cli("user", "join", "bob", "team")
    system.cli("limit", "set", "user", "bob", "--rpm", "2")
    created = system.cli("token", "create", "bob").strip().splitlines()
    bob, prefix = created[-1], created[0].split()[1].rstrip("…")
    statuses = [httpx.post(f"{sentinelled.base}/v1/chat/completions", headers={"Authorization": f"Bearer {bob}"},
                           json={"model": "quick", "messages": HI}, timeout=10).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    system.cli("token", "revoke", prefix)
    deadline = time.monotonic() + 1.5
    while httpx.get(f"{sentinelled.base}/v1/models", headers={"Authorization": f"Bearer {bob}"}).status_code != 401:
        assert time.monotonic() < deadline, "the revocation did not reach the gateway through the Sentinel primary"
        time.sleep(0.05)


@dataclass
class Outcome:
    answered: int = 0
    errors: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)


def test_killing_the_primary_mid_load_ends_every_request_and_service_resumes(sentinelled: Sentinelled) -> None:
    outcome = Outcome()
    lock = threading.Lock()

    def stream() -> None:
        started = time.monotonic()
        frames: list[str] = []
        try:
            with httpx.stream("POST", f"{sentinelled.base}/v1/chat/completions", headers=sentinelled.headers,
                              timeout=60, json={"model": "slow", "messages": HI, "stream": True}) as response:
                frames = [line for line in response.iter_lines() if line.startswith("data: ")]
                status = response.status_code
        except httpx.HTTPError as error:
            frames, status = [f"transport: {error!r}"], 0
        with lock:
            outcome.durations.append(time.monotonic() - started)
            if status == 200 and frames[-1] == "data: [DONE]" and '"error"' not in "".join(frames):
                outcome.answered += 1
            else:
                outcome.errors.append(f"{status} {frames[-2:] if frames else ''}")

    threads = [threading.Thread(target=stream) for _ in range(LOAD)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    killed_at = time.monotonic()
    old = sentinelled.redis.kill_primary()
    recovered = None
    while recovered is None and time.monotonic() - killed_at < 40:
        answer = httpx.post(f"{sentinelled.base}/v1/chat/completions", headers=sentinelled.headers, timeout=10,
                            json={"model": "quick", "messages": HI})
        if answer.status_code == 200:
            recovered = time.monotonic() - killed_at
        else:
            assert answer.status_code == 503, answer.text  # queue_unavailable or no_worker meanwhile
            time.sleep(0.2)
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a request hung after the failover"
    assert recovered is not None, "no request succeeded within 40 s of the failover"
    assert sentinelled.redis.primary_port() != old
    assert outcome.answered + len(outcome.errors) == LOAD
    print(f"\nfailover: {LOAD} streams running when the primary died: {outcome.answered} answered, "
          f"{len(outcome.errors)} ended with an error, longest {max(outcome.durations):.1f} s; new requests "
          f"succeed {recovered:.1f} s after the kill; errors: {sorted(set(outcome.errors))[:3]}")


@pytest.mark.parametrize("sentinels", ["redis-1", "redis-1:", ":26379", "redis-1:port", "redis-1:70000"])
def test_a_malformed_sentinel_list_is_refused_at_start(sentinels: str) -> None:
    with pytest.raises(ValidationError, match="host:port"):
        CommonSettings(redis_sentinels=sentinels)


def test_the_sentinel_list_names_every_sentinel() -> None:
    settings = CommonSettings(redis_sentinels="10.0.0.1:26379, sentinel-b:26380,", redis_sentinel_service="mp")
    target = settings.redis_target()
    assert (target.sentinels, target.service) == ((("10.0.0.1", 26379), ("sentinel-b", 26380)), "mp")
    assert CommonSettings().redis_target().sentinels == ()

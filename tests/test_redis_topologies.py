"""ModelPort on Redis beyond one node: a Sentinel-managed primary (a primary, a replica and three
Sentinels) and a Redis Cluster (three primaries with a replica each). Gateways, workers and the CLI find
their nodes by themselves; the queue, limits, abort and revocation work there; and when the node holding a
model's keys is killed mid-load, every request ends (answered, or with one clean error: none hangs) and new
requests succeed once its replica has taken over."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
import redis
from pydantic import ValidationError

from modelport.settings import CommonSettings
from tests.redis_topologies import ClusterRedis, ReplicatedRedis, SentinelRedis
from tests.system import System

HI = [{"role": "user", "content": "hi"}]
LOAD = 24  # streams running when the node holding their model's keys dies


@dataclass
class Topology:
    redis: ReplicatedRedis
    system: System
    base: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module", params=[SentinelRedis, ClusterRedis], ids=["sentinel", "cluster"])
def topology(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             logs: Path) -> Iterator[Topology]:
    server: ReplicatedRedis = request.param()
    server.start()
    system = System(f"sqlite:///{tmp_path_factory.mktemp('topology') / 'db.sqlite'}", server, logs, **server.env)
    system.cli("llm", "add", "quick", "--backend", "fake")
    system.cli("llm", "add", "slow", "--backend", "fake", "--delay-ms", "100", "--chunks", "40", "--max-queue", "512")
    system.cli("llm", "add", "single", "--backend", "fake", "--delay-ms", "20", "--chunks", "5", "--concurrency", "1")
    system.cli("group", "add", "team")
    system.cli("user", "add", "alice")
    system.cli("user", "join", "alice", "team")
    for model in ("quick", "slow", "single"):
        system.cli("group", "grant", "team", model)
    token = system.cli("token", "create", "alice").strip().splitlines()[-1]
    system.workers("quick", "slow", "single")
    yield Topology(server, system, system.gateway(), token)
    system.stop()
    server.stop()


def test_requests_stream_through_the_nodes_the_processes_find(topology: Topology) -> None:
    client = openai.OpenAI(base_url=f"{topology.base}/v1", api_key=topology.token, max_retries=0)
    stream = client.chat.completions.create(model="quick", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    node = redis.Redis(port=topology.redis.node_of("quick"), password=topology.redis.password)
    names = {entry["name"] for entry in node.client_list()}
    node.close()
    assert any(name.startswith("mp-gateway-") for name in names) and any(name.startswith("mp-worker-")
                                                                         for name in names)
    # One gateway process holds at most four connections to any node: two for commands, its inbox's
    # reader and its subscriber (as on a single Redis); on a cluster, each of those three clients also keeps
    # the connection it discovered the cluster with, to the node the URL names.
    for port in topology.redis.data_ports:
        node = redis.Redis(port=port, password=topology.redis.password)
        held = [entry["name"] for entry in node.client_list() if entry["name"].startswith("mp-gateway-")]
        node.close()
        discovery = 3 if isinstance(topology.redis, ClusterRedis) and port == topology.redis.port else 0
        assert len(held) <= 4 + discovery, (port, held)


def test_abort_limits_and_revocation_work_there(topology: Topology) -> None:
    with httpx.stream("POST", f"{topology.base}/v1.0/chat/completions", headers=topology.headers,
                      timeout=30, json={"model": "slow", "messages": HI, "stream": True}) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        aborted = httpx.post(f"{topology.base}/v1.0/chat/abort", headers=topology.headers,
                             json={"ids": [stream.headers["x-request-id"]]})
        rest = list(lines)
    assert aborted.json() == {"object": "chat.abort", "cancelled": 1}
    assert json.loads([line for line in rest if line.startswith("data: {")][-1][6:])["choices"][0]["exit_code"] == 1
    system = topology.system
    system.cli("user", "add", "bob")
    system.cli("user", "join", "bob", "team")
    system.cli("limit", "set", "user", "bob", "--rpm", "2")
    created = system.cli("token", "create", "bob").strip().splitlines()
    bob, prefix = created[-1], created[0].split()[1].rstrip("…")
    statuses = [httpx.post(f"{topology.base}/v1/chat/completions", headers={"Authorization": f"Bearer {bob}"},
                           json={"model": "quick", "messages": HI}, timeout=10).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    system.cli("token", "revoke", prefix)
    deadline = time.monotonic() + 1.5
    while httpx.get(f"{topology.base}/v1/models", headers={"Authorization": f"Bearer {bob}"}).status_code != 401:
        assert time.monotonic() < deadline, "the revocation did not reach the gateway"
        time.sleep(0.05)


def test_a_waiting_request_is_served_in_fair_turn(topology: Topology) -> None:
    system = topology.system
    system.cli("user", "add", "carol")
    system.cli("user", "join", "carol", "team")
    carol = system.cli("token", "create", "carol").strip().splitlines()[-1]

    def ask() -> int:
        return httpx.post(f"{topology.base}/v1/chat/completions", headers=topology.headers, timeout=60,
                          json={"model": "single", "messages": HI}).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        crowd = [pool.submit(ask) for _ in range(12)]
        time.sleep(0.3)
        with httpx.stream("POST", f"{topology.base}/v1/chat/completions", timeout=60,
                          headers={"Authorization": f"Bearer {carol}"},
                          json={"model": "single", "stream": True, "messages": HI}) as response:
            lines = [line for line in response.iter_lines() if line]
        still_waiting = sum(not future.done() for future in crowd)
        assert [future.result() for future in crowd] == [200] * 12
    # Carol, who was not waiting, goes ahead of a user already being served in turn: next in line, not
    # behind the whole crowd (whose jobs mostly still wait when her answer is done).
    assert lines[0] in (": queued, position 1", ": queued, position 2") and lines[-1] == "data: [DONE]"
    assert still_waiting >= 6


@dataclass
class Outcome:
    answered: int = 0
    errors: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)


def test_killing_the_node_of_a_model_mid_load_ends_every_request_and_service_resumes(topology: Topology) -> None:
    outcome = Outcome()
    lock = threading.Lock()

    def stream() -> None:
        started = time.monotonic()
        frames: list[str] = []
        try:
            with httpx.stream("POST", f"{topology.base}/v1/chat/completions", headers=topology.headers,
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
    old = topology.redis.kill_node_of("slow")
    recovered = None
    while recovered is None and time.monotonic() - killed_at < 40:
        answer = httpx.post(f"{topology.base}/v1/chat/completions", headers=topology.headers, timeout=10,
                            json={"model": "slow", "messages": HI, "max_tokens": 2})
        if answer.status_code == 200:
            recovered = time.monotonic() - killed_at
        else:
            assert answer.status_code == 503, answer.text  # queue_unavailable or no_worker meanwhile
            time.sleep(0.2)
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a request hung after the failover"
    assert recovered is not None, "no request succeeded within 40 s of the failover"
    assert topology.redis.node_of("slow") != old
    assert outcome.answered + len(outcome.errors) == LOAD
    print(f"\n{type(topology.redis).__name__}: {LOAD} streams running when the node died: {outcome.answered} answered, "
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

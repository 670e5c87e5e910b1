"""What one careless or hostile API user, admin or network neighbour could do to a live gateway, and the
bound that now stops each: request sizes, slow and anonymous uploads, metric labels, the queue share,
Redis failures, upstream keys an admin names, and the usage figures of every way a request ends."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from modelport.broker.limits import LimitSubject, RateLimiter
from modelport.protocol import keys
from modelport.protocol.connection import redis_client
from modelport.protocol.errors import Unavailable
from tests.servers import Process, RedisServer, running
from tests.system import System, environment, usage_by_user, usage_records

HELLO = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Guarded:
    system: System
    base: str
    token: str
    other: str


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[Guarded]:
    for redis_server in running(RedisServer()):
        system = System(f"sqlite:///{tmp_path_factory.mktemp('guarded') / 'db.sqlite'}", redis_server, logs)
        system.cli("llm", "add", "fake", "--backend", "fake")
        system.cli("llm", "add", "slow", "--backend", "fake", "--delay-ms", "150", "--chunks", "20",
                   "--max-queue", "4")
        token = system.user_with_token("fake", user="careful")
        other = system.user_with_token("fake", user="bystander")
        system.cli("group", "add", "slow-users")
        system.cli("group", "grant", "slow-users", "slow")
        for user in ("careful", "bystander"):
            system.cli("user", "join", user, "slow-users")
        system.workers("fake", "slow")
        yield Guarded(system, system.gateway(MODELPORT_BODY_TIMEOUT_S="1"), token, other)
        system.stop()


def post(guarded: Guarded, body: Any, token: str | None = None, path: str = "/v1/chat/completions",
         timeout: float = 30) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or guarded.token}"}
    return httpx.post(guarded.base + path, json=body, headers=headers, timeout=timeout)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


@pytest.mark.parametrize(("extra", "param"), [
    ({"messages": [{"role": "user", "content": "hi"}] * 2049}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * 513}]}, "messages[0].content"),
    ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]}, "tools"),
    ({"stop": ["x" * 257]}, "stop"),
    ({"stop": "x" * 257}, "stop"),
    ({"max_tokens": 10**14}, "max_tokens"),
    ({"max_completion_tokens": 10**7}, "max_completion_tokens"),
    ({"logit_bias": {str(i): 1 for i in range(1025)}}, "logit_bias"),
    ({"user": "u" * 257}, "user"),
    ({"seed": 2**64}, "seed"),
    ({f"extra_{i}": i for i in range(33)}, None),
])
def test_every_size_a_client_controls_is_bounded(guarded: Guarded, extra: dict[str, Any], param: str | None) -> None:
    answer = post(guarded, {**HELLO, **extra})
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == param


def raw_request(port: int, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.encode() + body)
    return sock


def read_reply(sock: socket.socket) -> str:
    """One whole HTTP response (head and Content-Length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(4096)
    return (head + b"\r\n\r\n" + body).decode()


def test_an_anonymous_client_is_refused_before_its_body_is_read(guarded: Guarded) -> None:
    port = int(guarded.base.rsplit(":", 1)[1])
    sock = raw_request(port, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "Content-Length: 4000000\r\n\r\n", b'{"model": "fake", ')
    reply = read_reply(sock)
    sock.close()
    assert reply.startswith("HTTP/1.1 401") and "missing_api_key" in reply


def test_stalled_uploads_do_not_stop_a_normal_request(guarded: Guarded) -> None:
    """200 anonymous clients and 20 token holders start uploads and stall; a normal request is still answered
    at once, and each token holder's stalled upload ends with 408 after MODELPORT_BODY_TIMEOUT_S."""
    port = int(guarded.base.rsplit(":", 1)[1])
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9000\r\n"
    stalled = [raw_request(port, head + "\r\n", b"{") for _ in range(200)]
    stalled_holders = [raw_request(port, head + f"Authorization: Bearer {guarded.token}\r\n\r\n", b"{")
                       for _ in range(20)]
    try:
        started = time.monotonic()
        assert post(guarded, HELLO, timeout=5).status_code == 200
        assert time.monotonic() - started < 2.0
        for sock in stalled_holders:
            reply = read_reply(sock)
            assert reply.startswith("HTTP/1.1 408") and "request_timeout" in reply
    finally:
        for sock in stalled + stalled_holders:
            sock.close()


def test_unknown_model_names_never_become_metric_labels(guarded: Guarded) -> None:
    probe = f"probe-{uuid.uuid4().hex}"
    assert post(guarded, {**HELLO, "model": probe}).status_code == 404
    assert post(guarded, {**HELLO, "model": "fake"}).status_code == 200
    metrics = httpx.get(f"{guarded.base}/metrics").text
    assert probe not in metrics
    assert 'modelport_requests_total{endpoint="chat",model="fake",status="200"}' in metrics


def test_one_user_cannot_fill_a_models_whole_queue(guarded: Guarded) -> None:
    """``slow`` queues 4 jobs at most; a user may hold half of them (MODELPORT_QUEUE_USER_SHARE=0.5)."""
    slow = {**HELLO, "model": "slow"}
    answers: list[httpx.Response] = []
    burst = [threading.Thread(target=lambda: answers.append(post(guarded, slow))) for _ in range(4)]
    for thread in burst:
        thread.start()
    deadline = time.monotonic() + 10
    while len([a for a in answers if a.status_code == 429]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    bystander = post(guarded, slow, guarded.other)
    for thread in burst:
        thread.join()
    refused = [answer for answer in answers if answer.status_code == 429]
    assert len(refused) == 2 and all(error_of(a)["code"] == "queue_share_exceeded" for a in refused)
    assert all(a.headers["retry-after"] == "1" for a in refused)
    assert bystander.status_code == 200, "another user is still served"
    assert sorted(a.status_code for a in answers) == [200, 200, 429, 429]


def test_a_group_cannot_fill_a_models_whole_queue_either(guarded: Guarded) -> None:
    """With MODELPORT_QUEUE_GROUP_SHARE=0.5, the members of the high-priority group ``team`` together hold at
    most 2 of ``slow``'s 4 places; someone outside the group is still admitted."""
    system = guarded.system
    system.cli("group", "add", "team", "--priority", "5")
    system.cli("group", "grant", "team", "slow")
    members = [system.user_with_token("slow", user=f"member-{i}") for i in range(2)]
    for i in range(2):
        system.cli("user", "join", f"member-{i}", "team")
    base = system.gateway(MODELPORT_QUEUE_GROUP_SHARE="0.5", MODELPORT_QUEUE_USER_SHARE="1")
    slow = {**HELLO, "model": "slow"}
    answers: list[httpx.Response] = []

    def ask(token: str) -> None:
        answers.append(httpx.post(f"{base}/v1/chat/completions", json=slow,
                                  headers={"Authorization": f"Bearer {token}"}, timeout=30))

    burst = [threading.Thread(target=ask, args=(token,)) for token in (*members, members[0])]
    for thread in burst:
        thread.start()
    deadline = time.monotonic() + 10
    while not any(answer.status_code == 429 for answer in answers) and time.monotonic() < deadline:
        time.sleep(0.05)
    outsider = httpx.post(f"{base}/v1/chat/completions", json=slow, timeout=30,
                          headers={"Authorization": f"Bearer {guarded.other}"})
    for thread in burst:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [200, 200, 429]
    [refused] = [answer for answer in answers if answer.status_code == 429]
    assert error_of(refused)["code"] == "queue_share_exceeded" and "group" in error_of(refused)["message"]
    assert outsider.status_code == 200


async def test_counts_beyond_lua_number_precision_stay_readable(redis_server: RedisServer) -> None:
    """Lua wrote a day counter of 10**15 as "1e+15", which every later admission failed to parse."""
    client = redis_client(redis_server.url, connections=1, name="test-limits")
    limiter = RateLimiter(client, lease_ms=60_000)
    subject = LimitSubject(f"user:{uuid.uuid4().int % 10**9}", tokens_per_day=10**17)
    for _ in range(3):
        admission = await limiter.admit([subject], 10**15)
        await limiter.settle(admission, 10**15 + 1)
    stored = await client.get(keys.limit_keys(subject.name)[2])
    assert isinstance(stored, bytes) and stored.endswith(f":{3 * (10**15 + 1)}".encode())
    await client.aclose()


async def test_a_redis_refusal_on_the_request_path_is_a_503(redis_server: RedisServer) -> None:
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    client = redis_client(redis_server.url, connections=1, name="test-oom")
    limiter = RateLimiter(client, lease_ms=60_000)
    await admin.config_set("maxmemory", "1")
    try:
        with pytest.raises(Unavailable) as refused:
            await limiter.admit([LimitSubject("user:oom", requests_per_minute=10)], 10)
        assert refused.value.code == "queue_unavailable" and refused.value.status == 503
    finally:
        await admin.config_set("maxmemory", "0")
        await admin.aclose()
        await client.aclose()


def test_redis_out_of_memory_gives_503_never_500(guarded: Guarded) -> None:
    guarded.system.cli("limit", "set", "user", "careful", "--rpm", "1000")
    admin = redis.Redis.from_url(guarded.system.redis_url)
    assert post(guarded, HELLO).status_code == 200
    running_job = threading.Thread(target=stream_until, args=(guarded, {**HELLO, "model": "slow"}, 1000))
    running_job.start()
    deadline = time.monotonic() + 10
    while not admin.zcard(keys.in_flight(1)) and time.monotonic() < deadline:
        time.sleep(0.05)
    admin.config_set("maxmemory", "1")
    try:
        limited = post(guarded, HELLO)
        unlimited = post(guarded, HELLO, guarded.other)
        aborted = post(guarded, {}, path="/v1.0/chat/abort")
    finally:
        admin.config_set("maxmemory", "0")
        admin.close()
        running_job.join(timeout=30)
    for answer in (limited, unlimited, aborted):
        assert answer.status_code == 503, answer.text
        assert error_of(answer)["code"] == "queue_unavailable"
    assert post(guarded, HELLO).status_code == 200


def test_upstream_keys_come_only_from_variables_the_operator_allows(guarded: Guarded) -> None:
    system = guarded.system
    for variable in ("MODELPORT_DATABASE_URL", "HOME", "MODELPORT_ADMIN_SECRET_KEY"):
        with pytest.raises(SystemExit):
            system.cli("llm", "add", f"thief-{variable.lower()}", "--backend", "openai_compat", "--base-url",
                       "http://attacker.example/v1", "--upstream-model", "m", "--api-key-env", variable)
    with pytest.raises(SystemExit):
        system.cli("llm", "add", "thief-gemini", "--backend", "gemini", "--upstream-model", "m",
                   "--api-key-env", "MODELPORT_REDIS_URL")
    assert "registered" in system.cli("llm", "add", "allowed", "--backend", "openai_compat", "--base-url",
                                      "http://api.example/v1", "--upstream-model", "m", "--api-key-env",
                                      "EXAMPLE_API_KEY")
    hosts = {**system.env, "MODELPORT_UPSTREAM_HOSTS": '["api.example"]'}
    with environment(hosts), pytest.raises(SystemExit):
        system.cli("llm", "add", "elsewhere", "--backend", "openai_compat", "--base-url", "http://evil.example/v1",
                   "--upstream-model", "m")


def test_a_worker_refuses_a_registration_that_names_a_setting_as_its_key(guarded: Guarded) -> None:
    """Whoever could write the registrations (an admin's form, or Redis itself) cannot make a worker send one
    of its settings to an upstream: the worker checks the config again and exits with the reason."""
    registration = {"name": "stolen", "backend": "openai_compat", "enabled": True,
                    "config": {"base_url": "http://127.0.0.1:9/v1", "upstream_model": "m",
                               "api_key_env": "MODELPORT_REDIS_URL"}}
    admin = redis.Redis.from_url(guarded.system.redis_url)
    admin.hset(keys.REGISTRATIONS, "stolen", json.dumps(registration))
    admin.close()
    log = guarded.system.logs / "worker-stolen.log"
    worker = Process(["modelport", "worker", "stolen"], guarded.system.worker_env("stolen"), log)
    assert worker.handle.wait(timeout=30) == 1
    assert "MODELPORT_REDIS_URL" in log.read_text() and "not allowed" in log.read_text()


def stream_until(guarded: Guarded, body: dict[str, Any], chunks: int, path: str = "/v1/chat/completions",
                 token: str | None = None) -> str:
    """Stream a request, read ``chunks`` data lines, then drop the connection; returns the job id."""
    headers = {"Authorization": f"Bearer {token or guarded.token}"}
    with httpx.stream("POST", guarded.base + path, json={**body, "stream": True}, headers=headers,
                      timeout=30) as response:
        seen, job = 0, ""
        for line in response.iter_lines():
            if line.startswith("data: {"):
                job = job or json.loads(line[6:])["id"]
                seen += 1
                if seen >= chunks:
                    break
    return job


def test_usage_rows_hold_true_figures_for_every_way_a_request_ends(guarded: Guarded) -> None:
    """Done, failed at the worker, client gone mid-stream, aborted, and past the deadline: every row has a
    latency between 0 and the time the test took, a first-token time within it, and the right status."""
    system = guarded.system
    slow = {**HELLO, "model": "slow"}
    started = time.monotonic()
    jobs = {"done": post(guarded, HELLO).json()["id"]}
    failed = post(guarded, {**HELLO, "stop": ""})
    assert failed.status_code == 400, failed.text
    jobs["gone"] = stream_until(guarded, slow, 3)
    aborter = system.user_with_token("slow", user="aborter")
    aborted: list[str] = []
    streaming = threading.Thread(target=lambda: aborted.append(stream_until(guarded, slow, 1000, token=aborter)))
    streaming.start()
    deadline = time.monotonic() + 10
    cancelled = 0
    while not cancelled and time.monotonic() < deadline:
        cancelled = post(guarded, {}, aborter, "/v1.0/chat/abort").json()["cancelled"]
    streaming.join(timeout=10)
    jobs["aborted"] = aborted[0]
    timed = system.user_with_token("slow", user="timed")
    expired = httpx.post(f"{system.gateway(MODELPORT_JOB_TIMEOUT_S='0.5')}/v1/chat/completions", json=slow,
                         headers={"Authorization": f"Bearer {timed}"}, timeout=30)
    assert expired.status_code == 504
    wall_ms = (time.monotonic() - started) * 1000
    rows = {name: usage_records(system.database_url, job)[0] for name, job in jobs.items()}
    [rows["failed"]] = [row for row in usage_by_user(system.database_url, ["careful"], 2)["careful"]
                        if row.status == 400]
    [rows["deadline"]] = usage_by_user(system.database_url, ["timed"], 1)["timed"]
    for name, row in rows.items():
        assert 0 <= row.latency_ms <= wall_ms, (name, row.latency_ms)
        assert row.ttft_ms is None or 0 <= row.ttft_ms <= row.latency_ms, name
    assert {name: row.status for name, row in rows.items()} == {
        "done": 200, "failed": 400, "gone": 499, "aborted": 499, "deadline": 504}
    assert rows["gone"].completion_tokens >= 3, "tokens streamed before the client left are counted"
    assert rows["deadline"].latency_ms >= 500
    assert rows["deadline"].completion_tokens >= 2, "what reached the client before the deadline is counted"


def test_token_prefixes_are_matched_literally(guarded: Guarded) -> None:
    """SQL LIKE made ``_`` a wildcard: ``token revoke mp-ab_d`` revoked mp-abcd..."""
    token = guarded.system.user_with_token("fake", user="literal")
    at = next(index for index in range(3, 12) if token[index] != "_")
    pattern = token[:at] + "_" + token[at + 1:12]
    for command in (("token", "revoke", pattern), ("limit", "set", "token", pattern, "--rpm", "1")):
        with pytest.raises(SystemExit):
            guarded.system.cli(*command)
    assert post(guarded, HELLO, token).status_code == 200


def test_workers_outlive_a_spell_of_redis_out_of_memory(guarded: Guarded) -> None:
    """An OutOfMemoryError used to end a worker's heartbeat task for good: the process stayed up, its model
    answered 503 no_worker until someone restarted it."""
    admin = redis.Redis.from_url(guarded.system.redis_url)
    admin.config_set("maxmemory", "1")
    try:
        time.sleep(4.0)  # longer than the 3 s lease: every heartbeat in between was refused
    finally:
        admin.config_set("maxmemory", "0")
        admin.close()
    deadline = time.monotonic() + 10
    status = 0
    while status != 200 and time.monotonic() < deadline:
        status = post(guarded, HELLO).status_code
        time.sleep(0.2)
    assert status == 200, "the worker came back by itself"

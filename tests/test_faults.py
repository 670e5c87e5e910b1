"""Faults with real processes: killed workers, dropped clients, a restarted Redis, revocation across
gateways, deadlines and draining."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from modelport.protocol import keys
from tests.servers import Process, RedisServer, running
from tests.system import System, usage_records
from tests.waiting import until

STALLABLE_REPLY = " ".join(f"t{i:02d}" for i in range(1, 25))
FAST_LEASE = {"MODELPORT_LEASE_MS": "1500", "MODELPORT_HEARTBEAT_S": "0.3"}


@pytest.fixture(scope="module")
def private_redis() -> Iterator[RedisServer]:
    """Its own Redis, since these tests restart it."""
    yield from running(RedisServer())


@pytest.fixture(scope="module")
def faults(private_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[System]:
    system = System(f"sqlite:///{tmp_path_factory.mktemp('faults') / 'db.sqlite'}", private_redis, logs,
                    **FAST_LEASE)
    system.cli("group", "add", "all")
    for name, config in (("slowstart", {"first_delay_ms": 2000, "concurrency": 1}),
                         ("stallable", {"first_delay_ms": 1000, "delay_ms": 100, "reply": STALLABLE_REPLY,
                                        "concurrency": 1}),
                         ("slowstream", {"delay_ms": 50, "chunks": 200}),
                         ("quick", {})):
        system.cli("llm", "add", name, "--backend", "fake", "--config", json.dumps(config))
        system.cli("group", "grant", "all", name)
    yield system
    system.stop()


@pytest.fixture(scope="module")
def token(faults: System) -> str:
    faults.cli("user", "add", "tester")
    faults.cli("user", "join", "tester", "all")
    return faults.cli("token", "create", "tester").strip().splitlines()[-1]


def chat(base: str, token: str, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"}, timeout=60,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


class BackgroundChat:
    """A chat request running in a thread while the test breaks things around it."""

    def __init__(self, base: str, token: str, model: str) -> None:
        self.answer: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, args=(base, token, model))
        self._thread.start()

    def _run(self, base: str, token: str, model: str) -> None:
        self.answer = chat(base, token, model)

    def result(self, timeout: float = 30) -> httpx.Response:
        self._thread.join(timeout=timeout)
        assert self.answer is not None, "the request did not end"
        return self.answer


def holder(system: System, model: str, workers: list[Process]) -> Process:
    """The worker process that holds the model's one running job (consumer names carry the pid)."""
    client = redis.Redis.from_url(system.redis_url)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pending = client.xpending_range(keys.jobs(model), keys.WORKER_GROUP, "-", "+", 10)
        for entry in pending:
            consumer = str(entry["consumer"])
            for worker in workers:
                if f"-{worker.handle.pid}-" in consumer:
                    return worker
        time.sleep(0.05)
    raise AssertionError(f"no worker claimed the {model} job")


def stop_all(workers: list[Process]) -> None:
    for worker in workers:
        worker.stop()


def test_job_of_a_worker_killed_before_its_first_delta_runs_on_another(faults: System, token: str) -> None:
    base = faults.gateway()
    first = faults.worker("slowstart")
    request = BackgroundChat(base, token, "slowstart")
    assert holder(faults, "slowstart", [first]) is first
    second = faults.worker("slowstart")
    first.kill()
    answer = request.result()
    stop_all([second])
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"].startswith("Hello from the fake model")


def test_a_worker_stalled_past_its_lease_stops_instead_of_streaming_beside_its_rerun(faults: System,
                                                                                     token: str) -> None:
    """SIGSTOP the worker that claimed a job, past its lease: another worker re-runs the job; SIGCONT the
    first while the re-run streams. The woken worker used to stream its own copy into the same reply
    ("t01 t02 t03 t01 t04 t02 ..."); now the gateway follows the run it heard first and the woken worker
    stops as soon as it learns it lost the job."""
    base = faults.gateway()
    # Both workers are live before the stall: a second one started after it could come up later than the
    # first one's lease ends, and the gateway would rightly fail the job for want of any live worker.
    workers = faults.workers("stallable", "stallable")
    request = BackgroundChat(base, token, "stallable")
    stalled = holder(faults, "stallable", workers)
    os.kill(stalled.handle.pid, signal.SIGSTOP)
    client = redis.Redis.from_url(faults.redis_url)
    try:
        deadline = time.monotonic() + 20
        while not client.hlen(keys.started("stallable")) and time.monotonic() < deadline:
            time.sleep(0.05)  # until the re-run's first words are out
    finally:
        os.kill(stalled.handle.pid, signal.SIGCONT)
    answer = request.result()
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == STALLABLE_REPLY
    deadline = time.monotonic() + 5
    while client.xpending(keys.jobs("stallable"), keys.WORKER_GROUP)["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.xpending(keys.jobs("stallable"), keys.WORKER_GROUP)["pending"] == 0
    client.close()
    stop_all(workers)


def test_a_redis_stall_past_the_socket_timeout_never_shows_a_word_twice(faults: System, token: str,
                                                                        private_redis: RedisServer) -> None:
    """SIGSTOP redis-server for a little longer than the 5 s socket timeout while a reply streams: the worker's
    batch times out and is sent again, though Redis executes the first send when it resumes. The client used to
    receive those words twice; now it gets the reply once, or one clean error."""
    base = faults.gateway()
    workers = faults.workers("stallable")
    assert private_redis.process is not None
    with httpx.stream("POST", f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                      json={"model": "stallable", "stream": True, "messages": [{"role": "user", "content": "x"}]},
                      timeout=60) as response:
        lines = response.iter_lines()
        frames = [next(line for line in lines if line.startswith("data: {"))]
        os.kill(private_redis.process.pid, signal.SIGSTOP)
        time.sleep(5.5)
        os.kill(private_redis.process.pid, signal.SIGCONT)
        frames += [line for line in lines if line.startswith("data: ")]
    stop_all(workers)
    chunks = [json.loads(frame.removeprefix("data: ")) for frame in frames if frame != "data: [DONE]"]
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk.get("choices"))
    errors = [chunk["error"]["code"] for chunk in chunks if "error" in chunk]
    assert frames[-1] == "data: [DONE]"
    assert text == STALLABLE_REPLY or (len(errors) == 1 and STALLABLE_REPLY.startswith(text)), (text, errors)


def test_worker_killed_mid_stream_ends_with_an_error_frame_and_done(faults: System, token: str) -> None:
    base = faults.gateway()
    workers = faults.workers("slowstream", "slowstream")
    with httpx.stream("POST", f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                      json={"model": "slowstream", "stream": True, "messages": [{"role": "user", "content": "x"}]},
                      timeout=60) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: {"))
        holder(faults, "slowstream", workers).kill()
        killed_at = time.monotonic()
        rest = [line for line in lines if line]
    elapsed = time.monotonic() - killed_at
    stop_all(workers)
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2].removeprefix("data: "))["error"]["code"] == "worker_lost"
    assert elapsed < 6, f"the error frame took {elapsed:.1f} s"
    job = json.loads(first.removeprefix("data: "))["id"]
    [row] = usage_records(faults.database_url, job)
    assert row.status == 503 and 0 <= (row.ttft_ms or 0) <= row.latency_ms
    assert row.completion_tokens >= 1, "what the client received before the worker was lost is counted"


def test_a_dropped_client_stops_generation_on_the_worker(faults: System, token: str) -> None:
    base = faults.gateway()
    workers = faults.workers("slowstream")
    with httpx.stream("POST", f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                      json={"model": "slowstream", "stream": True, "messages": [{"role": "user", "content": "x"}]},
                      timeout=60) as response:
        job_id = ""
        for count, line in enumerate(line for line in response.iter_lines() if line.startswith("data: {")):
            job_id = json.loads(line.removeprefix("data: "))["id"]
            if count == 2:
                break
    dropped_at = time.monotonic()
    [record] = usage_records(faults.database_url, job_id, timeout=8)
    stop_all(workers)
    assert record.status == 499
    assert record.completion_tokens < 3 + 10, "the worker kept generating after the client left"
    assert time.monotonic() - dropped_at < 6


def test_last_worker_dying_fails_waiting_requests_fast(faults: System, token: str) -> None:
    base = faults.gateway()
    only = faults.worker("slowstart")
    request = BackgroundChat(base, token, "slowstart")
    holder(faults, "slowstart", [only])
    only.kill()
    started = time.monotonic()
    answer = request.result()
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "no_worker"
    assert time.monotonic() - started < 5


def test_deadline_gives_504(faults: System, token: str) -> None:
    base = faults.gateway(MODELPORT_JOB_TIMEOUT_S="1")
    workers = faults.workers("slowstart")
    answer = chat(base, token, "slowstart")
    stop_all(workers)
    assert answer.status_code == 504
    assert answer.json()["error"]["code"] == "deadline_exceeded"


def test_sigterm_drains_running_jobs(faults: System, token: str) -> None:
    base = faults.gateway()
    [worker] = faults.workers("slowstart")
    request = BackgroundChat(base, token, "slowstart")
    holder(faults, "slowstart", [worker])
    worker.handle.terminate()
    answer = request.result()
    assert worker.handle.wait(timeout=10) == 0
    assert answer.status_code == 200


def test_revocation_reaches_every_gateway_within_a_second(faults: System, token: str) -> None:
    bases = [faults.gateway(), faults.gateway()]
    workers = faults.workers("quick")
    victim = faults.user_with_token("quick")
    assert all(chat(base, victim, "quick").status_code == 200 for base in bases)
    faults.cli("token", "revoke", victim[:12])
    revoked_at = time.monotonic()
    pending = set(bases)
    while pending and time.monotonic() - revoked_at < 1.0:
        pending = {base for base in pending if chat(base, victim, "quick").status_code != 401}
    stop_all(workers)
    assert not pending, f"still accepted after a second by {pending}"


def test_a_dead_gateway_releases_what_it_held_within_its_lease(faults: System) -> None:
    """A gateway killed mid-request held its user's only concurrency slot for the job timeout plus a minute
    (every gateway refused the user for ~11 minutes, each time with Retry-After: 1)."""
    doomed_base = faults.gateway(MODELPORT_GATEWAY_LEASE_S="2")
    doomed = faults.processes[-1]
    survivor = faults.gateway(MODELPORT_GATEWAY_LEASE_S="2")
    workers = faults.workers("slowstream")
    user = f"single-{time.monotonic_ns()}"
    token = faults.user_with_token("slowstream", user=user)
    faults.cli("limit", "set", "user", user, "--concurrent", "1")
    with httpx.stream("POST", f"{doomed_base}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                      json={"model": "slowstream", "stream": True, "messages": [{"role": "user", "content": "x"}]},
                      timeout=60) as response:
        lines = response.iter_lines()  # kept: a discarded iterator would close the stream
        assert next(line for line in lines if line.startswith("data: {"))
        refused = chat(survivor, token, "slowstream", max_tokens=1)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) <= 2
        doomed.kill()
    killed_at = time.monotonic()
    status = 429
    while status == 429 and time.monotonic() - killed_at < 10:
        status = chat(survivor, token, "slowstream", max_tokens=1).status_code
        time.sleep(0.1)
    released_after = time.monotonic() - killed_at
    client = redis.Redis.from_url(faults.redis_url)
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    held = sum(int(client.zcount(key, now_ms, "+inf")) for key in client.scan_iter(keys.in_flight(0).replace("0", "*")))
    client.close()
    stop_all(workers)
    assert status == 200 and released_after < 4, f"released after {released_after:.1f} s"
    assert held == 0, "the dead gateway's in-flight entries expired too"


def test_redis_restart_heals_without_restarting_processes(faults: System, token: str,
                                                          private_redis: RedisServer) -> None:
    base = faults.gateway()
    workers = faults.workers("quick")
    assert chat(base, token, "quick").status_code == 200
    private_redis.stop()
    assert chat(base, token, "quick").status_code == 503
    private_redis.start()
    deadline = time.monotonic() + 15
    status = 0
    while status != 200 and time.monotonic() < deadline:
        status = chat(base, token, "quick").status_code
        time.sleep(0.2)
    assert status == 200
    # The restarted Redis came back empty; the gateway restored the LLM registrations, so a worker
    # started now still finds its own.
    workers += faults.workers("slowstream")
    stop_all(workers)


def test_a_worker_needs_only_redis(faults: System, token: str) -> None:
    base = faults.gateway()
    worker = faults.worker("quick", MODELPORT_DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:9/nothing")
    assert chat(base, token, "quick").status_code == 200
    stop_all([worker])


def test_a_worker_waits_until_redis_holds_the_registrations_again(faults: System) -> None:
    client = redis.Redis.from_url(faults.redis_url)
    client.delete(keys.REGISTRATIONS)
    log = faults.logs / "worker-waiting.log"
    worker = Process(["modelport", "worker", "quick"], faults.worker_env("quick"), log)
    until(lambda: "waiting for the registration of quick" in log.read_text(), "the worker says it waits")
    assert worker.alive()
    before = set(client.zrange(keys.workers("quick"), 0, -1))
    faults.cli("group", "add", "latecomers")  # any announced change mirrors the registrations again
    try:
        until(lambda: set(client.zrange(keys.workers("quick"), 0, -1)) - before,
              "the worker serves once its registration is back")
    finally:
        stop_all([worker])


def test_a_worker_for_an_unregistered_llm_says_so_and_exits(faults: System) -> None:
    log = faults.logs / "worker-unregistered.log"
    worker = Process(["modelport", "worker", "no-such-llm"], faults.worker_env("no-such-llm"), log)
    assert worker.handle.wait(timeout=20) == 1
    assert "no LLM named 'no-such-llm' is registered" in log.read_text()

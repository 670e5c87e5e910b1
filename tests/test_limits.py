"""Limits and fairness across two gateway processes on one Redis: requests and tokens per minute, tokens
per day, concurrency caps, OpenAI's rate-limit headers, the Kuwa abort endpoint, fair and prioritised
queueing with queue-position comments."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from modelport.db.tables import UsageRecord, as_utc
from tests.servers import RedisServer
from tests.system import System, usage_by_user
from tests.waiting import until


@dataclass
class Limited:
    system: System
    gateways: list[str]


@pytest.fixture(scope="module")
def limited(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[Limited]:
    system = System(f"sqlite:///{tmp_path_factory.mktemp('limits') / 'db.sqlite'}", redis_server, logs)
    system.cli("llm", "add", "quick", "--backend", "fake")
    system.cli("llm", "add", "slow", "--backend", "fake", "--delay-ms", "150", "--chunks", "12")
    system.cli("llm", "add", "single", "--backend", "fake", "--delay-ms", "40", "--chunks", "3", "--concurrency", "1")
    system.cli("llm", "add", "vectors", "--backend", "fake", "--kind", "embedding")
    gateways = [system.gateway(), system.gateway()]
    system.workers("quick", "slow", "single", "vectors")
    yield Limited(system, gateways)
    system.stop()


def new_user(limited: Limited, name: str) -> str:
    token = limited.system.user_with_token("quick", user=name)
    group = f"slow-{name}"
    limited.system.cli("group", "add", group)
    limited.system.cli("group", "grant", group, "slow")
    limited.system.cli("user", "join", name, group)
    return token


def ask(base: str, token: str, model: str = "quick", **extra: object) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


def test_requests_per_minute_hold_across_gateways(limited: Limited) -> None:
    token = new_user(limited, "hammer")
    limited.system.changed("limit", "set", "user", "hammer", "--rpm", "60")
    bases = itertools.cycle(limited.gateways)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda base: ask(base, token), [next(bases) for _ in range(90)]))
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == 60 and statuses.count(429) == 30
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "60"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_every_endpoint_counts_against_the_same_limits(limited: Limited) -> None:
    token = new_user(limited, "polyglot")
    limited.system.cli("group", "grant", "slow-polyglot", "vectors")
    limited.system.changed("limit", "set", "user", "polyglot", "--rpm", "3")
    headers = {"Authorization": f"Bearer {token}"}
    base = limited.gateways[0]
    answers = [ask(base, token),
               httpx.post(f"{base}/v1/completions", headers=headers, json={"model": "quick", "prompt": "hi"}),
               httpx.post(f"{base}/v1/responses", headers=headers, json={"model": "quick", "input": "hi"}),
               httpx.post(f"{base}/v1/embeddings", headers=headers, json={"model": "vectors", "input": "hi"})]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert [answer.headers["x-ratelimit-remaining-requests"] for answer in answers] == ["2", "1", "0", "0"]


def test_success_carries_rate_limit_headers(limited: Limited) -> None:
    token = new_user(limited, "watcher")
    limited.system.changed("limit", "set", "user", "watcher", "--rpm", "10", "--tpm", "5000")
    answer = ask(limited.gateways[0], token)
    assert answer.status_code == 200
    assert answer.headers["x-ratelimit-limit-requests"] == "10"
    assert answer.headers["x-ratelimit-remaining-requests"] == "9"
    assert answer.headers["x-ratelimit-limit-tokens"] == "5000"
    assert answer.headers["x-ratelimit-reset-requests"].endswith("s")


def test_tokens_per_minute_are_accurate_to_one_request(limited: Limited) -> None:
    token = new_user(limited, "spender")
    limited.system.changed("limit", "set", "token", token[:12], "--tpm", "1000")
    used, estimate = 0, 0
    for count in range(400):
        answer = ask(limited.gateways[count % 2], token, max_tokens=50)
        if answer.status_code == 429:
            break
        used += answer.json()["usage"]["total_tokens"]
        estimate = max(estimate, 50 + 20)
    assert answer.status_code == 429 and "Tokens per minute" in answer.json()["error"]["message"]
    assert 1000 - 2 * estimate <= used <= 1000, used


def test_tokens_per_day_are_capped(limited: Limited) -> None:
    token = new_user(limited, "daily")
    limited.system.changed("limit", "set", "user", "daily", "--tpd", "150")
    statuses = [ask(limited.gateways[0], token, max_tokens=50).status_code for _ in range(30)]
    assert statuses[0] == 200 and statuses[-1] == 429


def test_concurrent_requests_are_capped_per_group(limited: Limited) -> None:
    token = new_user(limited, "crowd")
    limited.system.changed("limit", "set", "group", "slow-crowd", "--concurrent", "2")
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda base: ask(base, token, "slow"), limited.gateways * 2))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 200, 429, 429]
    assert ask(limited.gateways[1], token, "slow").status_code == 200


def test_abort_cancels_every_request_of_the_caller(limited: Limited) -> None:
    token = new_user(limited, "quitter")
    endings: list[tuple[float, list[str]]] = []

    def stream(base: str) -> None:
        with httpx.stream("POST", f"{base}/v1.0/chat/completions", headers={"Authorization": f"Bearer {token}"},
                          json={"model": "slow", "messages": [{"role": "user", "content": "hi"}]},
                          timeout=30) as response:
            lines = [line for line in response.iter_lines() if line]
        endings.append((time.monotonic(), lines))

    threads = [threading.Thread(target=stream, args=(base,)) for base in limited.gateways]
    for thread in threads:
        thread.start()
    until(lambda: limited.system.unfinished("quitter") == 2, "both requests are running")
    aborted = httpx.post(f"{limited.gateways[0]}/v1.0/chat/abort", headers={"Authorization": f"Bearer {token}"})
    aborted_at = time.monotonic()
    for thread in threads:
        thread.join(timeout=10)
    assert aborted.json() == {"object": "chat.abort", "cancelled": 2}
    assert len(endings) == 2
    for ended_at, lines in endings:
        assert ended_at - aborted_at < 1.0
        assert lines[-2:] == ["event: close", "data: [DONE]"]
        # Kuwa's clients parse every frame as a chunk: the stream ends like a finished one, saying why.
        [last] = json.loads(lines[-3].removeprefix("data: "))["choices"]
        assert (last["finish_reason"], last["exit_code"], last["modelport_end"]) == ("stop", 1, "client_cancelled")
        assert last["delta"] == {"role": "assistant", "content": ""}


def flood(pool: ThreadPoolExecutor, limited: Limited, token: str, count: int) -> list[Future[int]]:
    """``count`` requests to the one-slot model from one user, in parallel; their statuses to come."""
    futures = [pool.submit(lambda index: ask(limited.gateways[index % 2], token, "single").status_code, index)
               for index in range(count)]
    until(lambda: limited.system.queued("single") >= count // 2, f"{count // 2} of the flood are queued")
    return futures


def single_user(limited: Limited, name: str, group_priority: int = 0) -> str:
    token = limited.system.user_with_token("quick", user=name)
    limited.system.cli("group", "add", f"single-{name}", "--priority", str(group_priority))
    limited.system.cli("group", "grant", f"single-{name}", "single")
    limited.system.cli("user", "join", name, f"single-{name}")
    return token


def warm(limited: Limited, token: str) -> None:
    """Authenticate the token once on each gateway, so the measured request pays no cache miss."""
    for base in limited.gateways:
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def asked_and_started(record: UsageRecord) -> tuple[datetime, datetime]:
    """When a request reached its gateway and when its first token came back, read off its usage row (so
    the order is the gateways' and the worker's, not that of threads in this busy test process)."""
    assert record.created_at is not None and record.ttft_ms is not None
    asked = as_utc(record.created_at) - timedelta(milliseconds=record.latency_ms)
    return asked, asked + timedelta(milliseconds=record.ttft_ms)


def started_ahead(limited: Limited, newcomer: str, crowd: list[str], crowd_jobs: int) -> int:
    """How many of the crowd's jobs started after the newcomer asked and before its own job started."""
    rows = usage_by_user(limited.system.database_url, [newcomer, *crowd], at_least=1 + crowd_jobs)
    [mine] = rows.pop(newcomer)
    asked, started = asked_and_started(mine)
    return sum(1 for records in rows.values() for record in records
               if asked < asked_and_started(record)[1] < started)


# Ahead of a newcomer may start: the job already claimed when it asked, whose first token can come back
# just after, and the one after it (its request starts within the next two job slots).
AHEAD_AT_MOST = 2


def test_one_users_burst_does_not_starve_another_user(limited: Limited) -> None:
    flooder, other = single_user(limited, "flooder"), single_user(limited, "patient")
    warm(limited, other)
    with ThreadPoolExecutor(max_workers=50) as pool:
        burst = flood(pool, limited, flooder, 50)
        assert ask(limited.gateways[1], other, "single").status_code == 200
        assert [future.result() for future in burst] == [200] * 50
    ahead = started_ahead(limited, "patient", ["flooder"], 50)
    assert ahead <= AHEAD_AT_MOST, f"{ahead} of the burst started first"


def test_higher_priority_groups_are_served_first(limited: Limited) -> None:
    crowd = [f"crowd-{index}" for index in range(4)]
    tokens = [single_user(limited, name) for name in crowd]
    vip = single_user(limited, "vip", group_priority=10)
    warm(limited, vip)
    with ThreadPoolExecutor(max_workers=32) as pool:
        floods = [flood(pool, limited, token, 8) for token in tokens]
        assert ask(limited.gateways[0], vip, "single").status_code == 200
        assert [future.result() for burst in floods for future in burst] == [200] * 32
    ahead = started_ahead(limited, "vip", crowd, 32)
    assert ahead <= AHEAD_AT_MOST, f"{ahead} lower-priority jobs started first"


def test_abort_ends_requests_still_waiting_in_the_queue_at_once(limited: Limited) -> None:
    crowd, quitter = single_user(limited, "steady"), single_user(limited, "queued-quitter")
    warm(limited, quitter)

    def timed_ask(index: int) -> tuple[int, float]:
        status = ask(limited.gateways[index % 2], quitter, "single").status_code
        return status, time.monotonic()

    with ThreadPoolExecutor(max_workers=40) as pool:
        burst = flood(pool, limited, crowd, 30)
        mine = [pool.submit(timed_ask, index) for index in range(8)]
        until(lambda: limited.system.unfinished("queued-quitter") >= 6, "the quitter's requests wait")
        aborted = httpx.post(f"{limited.gateways[0]}/v1.0/chat/abort", headers={"Authorization": f"Bearer {quitter}"})
        aborted_at = time.monotonic()
        endings = [future.result() for future in mine]
        assert [future.result() for future in burst] == [200] * 30
    # Those served before the abort answered 200; the rest waited behind the crowd's jobs (round-robin),
    # and the last of them would otherwise end several jobs after the abort.
    cancelled = [ended_at for status, ended_at in endings if status == 499]
    assert sorted({status for status, _ in endings}) in ([200, 499], [499])
    # (the one running when the abort came may finish first: counted as cancelled, answered 200)
    assert len(cancelled) <= aborted.json()["cancelled"] <= len(cancelled) + 1 and len(cancelled) >= 4
    assert max(cancelled) - aborted_at < 0.5


def test_a_waiting_stream_on_v1_hears_its_queue_position(limited: Limited) -> None:
    flooder, listener = single_user(limited, "flooder-2"), single_user(limited, "listener")
    with ThreadPoolExecutor(max_workers=10) as pool:
        burst = flood(pool, limited, flooder, 10)
        with httpx.stream("POST", f"{limited.gateways[0]}/v1/chat/completions", timeout=60,
                          headers={"Authorization": f"Bearer {listener}"},
                          json={"model": "single", "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]}) as response:
            lines = [line for line in response.iter_lines() if line]
        assert [future.result() for future in burst] == [200] * 10
    # A user who was not waiting goes ahead of one already being served round-robin: next in line (second
    # if the flooder's first queued job has not been handed out yet), never behind the whole burst.
    assert lines[0] in (": queued, position 1", ": queued, position 2")
    assert lines[-1] == "data: [DONE]" and any(line.startswith("data: {") for line in lines)

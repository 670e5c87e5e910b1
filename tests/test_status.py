"""``modelport status``: what an operator sees as workers start and die and a queue grows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.live import Live
from tests.waiting import until

MODEL = "status-slow"


def status(live: Live) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(live.system.cli("status", "--json"))
    return found


def model_status(live: Live) -> dict[str, Any]:
    return next(model for model in status(live)["models"] if model["name"] == MODEL)


def ask(live: Live) -> int:
    return httpx.post(f"{live.base}/v1/chat/completions", headers={"Authorization": f"Bearer {live.token}"},
                      json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, timeout=60).status_code


def test_status_follows_workers_and_the_queue(live: Live) -> None:
    system = live.system
    system.cli("llm", "add", MODEL, "--backend", "fake", "--chunks", "8", "--delay-ms", "150", "--concurrency", "1")
    system.cli("group", "grant", "everything", MODEL)
    assert model_status(live)["workers"] == []
    worker = system.worker(MODEL)
    (seen,) = model_status(live)["workers"]
    assert seen["pid"] == worker.handle.pid and seen["deployment"] == "default"
    assert 0 <= seen["heartbeat_age_s"] < 5 and seen["running"] == 0
    assert any(gateway["heartbeat_age_s"] < 5 for gateway in status(live)["gateways"])

    with ThreadPoolExecutor(6) as pool:
        answers = [pool.submit(ask, live) for _ in range(6)]
        busy = until(lambda: (found := model_status(live))["queue_depth"] >= 3 and found,
                     "the queue grew under load")
        assert busy["running"] == 1 and busy["workers"][0]["running"] == 1
        until(lambda: model_status(live)["oldest_wait_s"] > 0.3, "the oldest job's wait grows")
        assert [answer.result() for answer in answers] == [200] * 6
    after = until(lambda: (found := model_status(live))["requests_last_minute"] >= 6 and found,
                  "the requests counted")
    assert after["queue_depth"] == 0 and after["oldest_wait_s"] == 0 and after["errors_last_minute"] == 0

    worker.kill()
    until(lambda: model_status(live)["workers"] == [], "the killed worker gone within its lease", timeout=30)


def test_the_table_names_what_to_do_when_nothing_runs(live: Live) -> None:
    live.system.cli("llm", "add", "status-idle", "--backend", "fake")
    table = live.system.cli("status")
    header, *rows = table.split("\n\n")[0].splitlines()
    assert header.split() == ["NAME", "ENABLED", "LIVE_WORKERS", "RUNNING", "QUEUE_DEPTH", "OLDEST_WAIT_S",
                              "REQUESTS_LAST_MINUTE", "ERRORS_LAST_MINUTE"]
    assert any(row.split()[:3] == ["status-idle", "yes", "0"] for row in rows)


def test_watch_prints_a_fresh_view_every_second(live: Live) -> None:
    env = {**os.environ, **live.system.env}
    watch = subprocess.Popen([sys.executable, "-m", "modelport", "status", "--watch", "--json"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert watch.stdout is not None
        started = time.monotonic()
        views = [json.loads(watch.stdout.readline()) for _ in range(3)]
        assert all({"models", "gateways"} <= set(view) for view in views)
        assert time.monotonic() - started >= 1.5, "one view a second, not as fast as it can"
    finally:
        watch.terminate()
        watch.wait(timeout=10)
        if watch.stdout is not None:
            watch.stdout.close()

"""Two deployments of one LLM on two upstreams, served from the LLM's one queue: load spreads over both;
when one upstream dies its worker stops claiming (a growing cool-down) and every request still succeeds on
the other; when it comes back it is used again."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.live import Live
from tests.servers import Process, free_port, wait_for_port
from tests.waiting import until


@dataclass
class Site:
    live: Live
    b_port: int
    b_upstream: Process
    b_metrics: str
    logs: Path

    def restart_b(self) -> None:
        self.b_upstream = upstream_process(self.b_port, self.logs)


def upstream_process(port: int, logs: Path) -> Process:
    process = Process(["tests.upstreams.openai_server", "--port", str(port)], {}, logs / f"upstream-{port}.log")
    wait_for_port(port)
    return process


@pytest.fixture(scope="module")
def site(live: Live, upstream: str, logs: Path) -> Iterator[Site]:
    """``dep``: deployment ``default`` on the suite's upstream answers 8 words, ``b`` on one of its own 5."""
    b_port = free_port()
    b_upstream = upstream_process(b_port, logs)
    system = live.system
    system.cli("llm", "add", "dep", "--backend", "openai_compat", "--base-url", upstream,
               "--upstream-model", "chunks-8")
    system.cli("llm", "deploy", "dep", "b", "--backend", "openai_compat", "--base-url",
               f"http://127.0.0.1:{b_port}/v1", "--upstream-model", "chunks-5")
    system.cli("group", "grant", "everything", "dep")
    metrics_port = free_port()
    system.worker("dep")
    system.worker("dep", deployment="b", MODELPORT_METRICS_PORT=str(metrics_port))
    site = Site(live, b_port, b_upstream, f"http://127.0.0.1:{metrics_port}/metrics", logs)
    yield site
    site.b_upstream.stop()


def served_by(site: Site, count: int) -> Counter[str]:
    """Send ``count`` requests, 10 at a time; which deployment answered each (by its reply's length), or
    the error status."""
    def one(_: int) -> str:
        answer = httpx.post(f"{site.live.base}/v1/chat/completions", timeout=30,
                            headers={"Authorization": f"Bearer {site.live.token}"},
                            json={"model": "dep", "messages": [{"role": "user", "content": "hi"}]})
        if answer.status_code != 200:
            return f"error {answer.status_code}"
        return {8: "default", 5: "b"}[answer.json()["usage"]["completion_tokens"]]

    with ThreadPoolExecutor(10) as pool:
        return Counter(pool.map(one, range(count)))


def failed_jobs(site: Site) -> float:
    text = httpx.get(site.b_metrics).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('modelport_worker_jobs_total{') and 'outcome="failed"' in line)


def test_load_spreads_over_both_deployments(site: Site) -> None:
    answers = served_by(site, 40)
    assert set(answers) == {"default", "b"}, answers
    metrics = httpx.get(f"{site.live.base}/metrics").text
    for deployment in ("default", "b"):
        assert f'modelport_deployment_live_workers{{deployment="{deployment}",model="dep"}} 1.0' in metrics


def test_a_dead_upstream_costs_no_request_and_its_deployment_stops_claiming(site: Site) -> None:
    site.b_upstream.kill()
    answers = served_by(site, 60)
    assert answers == Counter(default=60), "every request succeeded, on the live deployment"
    failed = failed_jobs(site)
    # What it had claimed when its first job failed fails too (ten requests are in flight at a time: one
    # claim's worth at most); after that it claims nothing while it cools down.
    assert 1 <= failed <= 10, f"the dead deployment claimed {failed} jobs of 60 during the outage"
    cooldown = re.search(r'modelport_worker_cooldown_seconds\{deployment="b",model="dep"\} ([0-9.]+)',
                         httpx.get(site.b_metrics).text)
    assert cooldown is not None and float(cooldown.group(1)) >= 1, "it is cooling down"
    site.restart_b()
    until(lambda: served_by(site, 10)["b"] > 0, "the recovered deployment serves again", timeout=45)

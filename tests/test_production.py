"""Production shape with real servers: nginx (the repository's nginx_config) in front of two gateway
processes, two workers, one Redis and one PostgreSQL; a browser on another origin running the Kuwa
JavaScript snippet through nginx; metrics and access logs."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.nginx import Nginx
from tests.servers import PostgresServer, Process, RedisServer, free_port, running
from tests.system import System
from tests.waiting import until

SLOW_REPLY = "one two three four five six"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Site:
    system: System
    nginx: Nginx
    gateways: list[str]
    gateway_processes: list[Process]
    token: str
    page_origin: str


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A Redis of its own: the Kuwa snippet's model name, gemini-pro, is served elsewhere in the suite too."""
    yield from running(RedisServer())


@pytest.fixture(scope="module")
def site(own_redis: RedisServer, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory,
         logs: Path) -> Iterator[Site]:
    system = System(postgres_server.create_database("production"), own_redis, logs)
    system.cli("llm", "add", "steady", "--backend", "fake", "--reply", SLOW_REPLY, "--delay-ms", "400")
    system.cli("llm", "add", "quick", "--backend", "fake")
    token = system.user_with_token("steady", user="operator")
    system.cli("group", "add", "quick-users")
    system.cli("group", "grant", "quick-users", "quick")
    system.cli("user", "join", "operator", "quick-users")
    page_origin = f"http://127.0.0.1:{free_port()}"
    cors = json.dumps([page_origin])
    gateways = [system.gateway(MODELPORT_CORS_ORIGINS=cors), system.gateway(MODELPORT_CORS_ORIGINS=cors)]
    gateway_processes = system.processes[-2:]
    system.workers("steady", "steady", "quick", "quick")
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), [int(base.rsplit(":", 1)[1]) for base in gateways], free_port())
    nginx.start()
    yield Site(system, nginx, gateways, gateway_processes, token, page_origin)
    nginx.stop()
    system.stop()


def client(local_address: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(verify=False, timeout=60, transport=httpx.HTTPTransport(verify=False,
                                                                                  local_address=local_address))


def chat_body(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def test_a_slow_stream_arrives_through_nginx_chunk_by_chunk(site: Site) -> None:
    arrivals: list[float] = []
    started = time.monotonic()
    with client() as http, http.stream("POST", f"{site.nginx.base}/v1/chat/completions", json=chat_body(
            "steady", stream=True), headers={"Authorization": f"Bearer {site.token}"}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 6
    assert arrivals[0] < 1.0 and arrivals[-1] - arrivals[0] > 1.5, arrivals


def test_admin_and_metrics_are_refused_outside_the_allow_list(site: Site) -> None:
    with client("127.0.0.2") as outsider:
        assert outsider.get(f"{site.nginx.base}/admin/").status_code == 403
        assert outsider.get(f"{site.nginx.base}/metrics").status_code == 403
    with client() as insider:
        assert insider.get(f"{site.nginx.base}/admin/").status_code != 403
        assert insider.get(f"{site.nginx.base}/metrics").status_code == 200


def test_nginx_refuses_bodies_over_the_limit_in_the_openai_envelope(site: Site) -> None:
    huge = chat_body("quick", messages=[{"role": "user", "content": "x" * (5 * 1024 * 1024)}])
    with client() as http:
        answer = http.post(f"{site.nginx.base}/v1/chat/completions", json=huge,
                           headers={"Authorization": f"Bearer {site.token}"})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"


def test_plain_http_is_redirected_to_https(site: Site) -> None:
    answer = httpx.get(f"http://127.0.0.1:{site.nginx.http_port}/v1/models")
    assert answer.status_code == 301 and answer.headers["location"].startswith("https://")


def access_lines(process: Process) -> list[dict[str, object]]:
    return [json.loads(line) for line in process.log.read_text().splitlines() if line.startswith('{"time"')]


def test_requests_spread_over_both_gateways_with_the_real_client_address(site: Site) -> None:
    with client("127.0.0.3") as http:
        for _ in range(6):
            answer = http.post(f"{site.nginx.base}/v1/chat/completions", json=chat_body("quick"),
                               headers={"Authorization": f"Bearer {site.token}"})
            assert answer.status_code == 200

    def per_gateway() -> list[list[dict[str, Any]]]:
        return [[line for line in access_lines(process) if line["client"] == "127.0.0.3"]
                for process in site.gateway_processes]

    until(lambda: sum(len(lines) for lines in per_gateway()) == 6, "the six requests are in the access logs")
    assert all(lines for lines in per_gateway()), "one gateway got no request"
    assert all(line["path"] == "/v1/chat/completions" and line["model"] == "quick" and "token" not in line
               for lines in per_gateway() for line in lines)
    with client("127.0.0.4") as direct:
        direct.get(f"{site.gateways[0]}/v1/models", headers={"X-Forwarded-For": "6.6.6.6",
                                                              "Authorization": f"Bearer {site.token}"})
    until(lambda: any(line["client"] == "127.0.0.4" for line in access_lines(site.gateway_processes[0])),
          "the direct request is logged with its socket's address")
    assert not any(line["client"] == "6.6.6.6" for line in access_lines(site.gateway_processes[0]))


def test_revocation_is_enforced_by_every_gateway_within_a_second(site: Site) -> None:
    victim = site.system.user_with_token("quick")
    for base in site.gateways:
        assert httpx.post(f"{base}/v1/chat/completions", json=chat_body("quick"),
                          headers={"Authorization": f"Bearer {victim}"}).status_code == 200
    site.system.cli("token", "revoke", victim[:12])
    until(lambda: all(httpx.post(f"{base}/v1/chat/completions", json=chat_body("quick"),
                                 headers={"Authorization": f"Bearer {victim}"}).status_code == 401
                      for base in site.gateways), "every gateway refuses the revoked token", timeout=1.0)


def test_metrics_count_requests_and_show_queues(site: Site) -> None:
    base = site.gateways[0]
    auth = {"Authorization": f"Bearer {site.token}"}
    for _ in range(3):
        httpx.post(f"{base}/v1/chat/completions", json=chat_body("quick"), headers=auth)
    httpx.post(f"{base}/v1/chat/completions", json=chat_body("nope"), headers=auth)
    text = httpx.get(f"{base}/metrics").text
    served = re.search(r'modelport_requests_total\{endpoint="chat",model="quick",status="200"\} (\d+)', text)
    assert served is not None and int(float(served.group(1))) >= 3
    assert 'modelport_rejected_requests_total{reason="model_not_found"}' in text
    assert 'modelport_live_workers{model="quick"} 2.0' in text
    assert 'modelport_time_to_first_token_seconds_count{model="quick"}' in text


def test_several_gateway_processes_on_one_port_report_summed_metrics(site: Site) -> None:
    base = site.system.gateway(MODELPORT_WORKERS="2")
    statuses: list[int] = []

    def ask() -> None:  # a connection of its own each time, so both processes accept some
        statuses.append(httpx.post(f"{base}/v1/chat/completions", json=chat_body("quick"), timeout=30,
                                   headers={"Authorization": f"Bearer {site.token}"}).status_code)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    until(lambda: len(access_lines(site.system.processes[-1])) >= 16, "the requests are in the access log")
    pids = {line["pid"] for line in access_lines(site.system.processes[-1])}
    text = httpx.get(f"{base}/metrics").text
    served = re.search(r'modelport_requests_total\{endpoint="chat",model="quick",status="200"\} (\d+)', text)
    assert statuses == [200] * 16 and len(pids) >= 1
    assert served is not None and int(float(served.group(1))) == 16, "every process's requests are summed"


def test_worker_metrics_are_served_when_a_port_is_set(site: Site) -> None:
    port = free_port()
    [worker] = site.system.workers("quick", MODELPORT_METRICS_PORT=str(port))
    [listening] = [conn for conn in psutil.Process(worker.handle.pid).net_connections("tcp")
                   if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port]
    assert listening.laddr.ip == "127.0.0.1", "worker metrics listen on loopback unless the operator opens them"
    for _ in range(6):
        httpx.post(f"{site.gateways[0]}/v1/chat/completions", json=chat_body("quick"),
                   headers={"Authorization": f"Bearer {site.token}"})
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'modelport_worker_running_jobs{model="quick"}' in text
    assert "modelport_worker_jobs_total" in text


def test_browser_on_another_origin_streams_the_kuwa_snippet_through_nginx(site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    site.system.cli("llm", "add", "gemini-pro", "--backend", "fake", "--reply", SLOW_REPLY, "--delay-ms", "300")
    site.system.cli("group", "grant", "quick-users", "gemini-pro")
    site.system.workers("gemini-pro")
    snippet = (Path(__file__).parent / "kuwa" / "snippet.js.txt").read_text()
    snippet = snippet.replace("http://localhost/v1.0", f"{site.nginx.base}/v1.0").replace("YOUR_AUTH_TOKEN",
                                                                                          site.token)
    (tmp_path / "index.html").write_text(f"<!doctype html><title>Kuwa client</title><script>{snippet}</script>")
    port = int(site.page_origin.rsplit(":", 1)[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    outputs: list[tuple[float, str]] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.on("console", lambda message: outputs.append((time.monotonic(), message.text))
                    if message.type == "log" else None)
            page.goto(f"{site.page_origin}/index.html")
            deadline = time.monotonic() + 20
            while not any(text == "Stream ended" for _, text in outputs) and time.monotonic() < deadline:
                page.wait_for_timeout(100)
            page.screenshot(path=str(tmp_path / "kuwa.png"))
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    texts = [text for _, text in outputs if text != "Stream ended"]
    assert texts[-1] == SLOW_REPLY and "Stream ended" in [text for _, text in outputs]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    assert len(texts) == len(SLOW_REPLY), "the text did not grow one chunk at a time"
    times = [moment for moment, text in outputs if text != "Stream ended"]
    assert times[-1] - times[0] > 1.0


def test_killing_one_gateway_loses_only_its_own_requests(site: Site) -> None:
    results: list[int] = []
    streaming: list[bool] = []

    def stream() -> None:
        with client() as http, http.stream("POST", f"{site.nginx.base}/v1/chat/completions",
                                           json=chat_body("steady", stream=True),
                                           headers={"Authorization": f"Bearer {site.token}"}) as response:
            try:
                lines: list[str] = []
                for line in response.iter_lines():
                    if line:
                        streaming.append(line.startswith("data:") and not any(seen.startswith("data:")
                                                                              for seen in lines))
                        lines.append(line)
            except httpx.RemoteProtocolError:  # its gateway died: the stream is cut
                results.append(0)
                return
            results.append(1 if lines[-1] == "data: [DONE]" and "error" not in lines[-2] else 0)

    threads = [threading.Thread(target=stream) for _ in range(6)]
    for thread in threads:
        thread.start()
    until(lambda: streaming.count(True) == 6, "all six streams have their first words")
    site.gateway_processes[1].kill()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 6 and 1 <= sum(results) < 6, results
    with client() as http:
        for _ in range(4):
            assert http.post(f"{site.nginx.base}/v1/chat/completions", json=chat_body("quick"),
                             headers={"Authorization": f"Bearer {site.token}"}).status_code == 200

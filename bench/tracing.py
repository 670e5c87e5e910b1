"""What tracing costs, measured side by side in one run: one installation, two gateway + worker pairs in
front of the same fast fake upstream, one without ``OTEL_EXPORTER_OTLP_ENDPOINT`` (tracing off, the
default) and one exporting every span to a local OTLP receiver that discards them:

1. concurrency 1: time to first token through each pair, and direct;
2. concurrency 50: CPU of gateway + worker per streamed request through each pair;
3. what the tracing helpers on the request path cost when tracing is off, per request, beside that CPU.

Run with ``python -m bench.tracing`` (``make bench`` runs it too).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import timeit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

from bench.overhead import UPSTREAM_FAST, concurrent, cpu_seconds, pct, sequential
from modelport import tracing
from tests.servers import Process, RedisServer, free_port, wait_for_port
from tests.system import System


class Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that reads each export and drops it."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


def untraced_helpers() -> None:
    """The tracing calls one request makes on gateway and worker when tracing is off."""
    with tracing.span("auth"):
        pass
    with tracing.span("permission"):
        pass
    with tracing.span("admission"):
        tracing.traceparent()
    tracing.record("time to first token", 0.0, 0.0)
    tracing.record("streaming", 0.0, 0.0)
    tracing.record_since("queue wait", 1)
    with tracing.span("worker claim"), tracing.span("upstream"):
        tracing.with_trace_headers({})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    redis_server = RedisServer()
    redis_server.start()
    root = Path(tempfile.mkdtemp(prefix="modelport-bench-tracing-"))
    port = free_port()
    system = System(f"sqlite:///{root / 'bench.db'}", redis_server, root, MODELPORT_LOG_LEVEL="WARNING")
    system.processes.append(Process(["tests.upstreams.openai_server", "--port", str(port)], {}, root / "up.log"))
    wait_for_port(port)
    upstream = f"http://127.0.0.1:{port}/v1"
    try:
        system.cli("group", "add", "bench")
        for name in ("off", "on"):
            system.cli("llm", "add", name, "--backend", "openai_compat", "--base-url", upstream, "--upstream-model",
                       UPSTREAM_FAST, "--concurrency", "256", "--max-queue", "4096")
            system.cli("group", "grant", "bench", name)
        system.cli("user", "add", "bench")
        system.cli("user", "join", "bench", "bench")
        token = system.cli("token", "create", "bench").strip().splitlines()[-1]
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}"}
        pairs = {}
        for name, settings in (("off", {}), ("on", otel)):
            [worker] = system.workers(name, **settings)
            gateway = system.gateway(**settings)
            pairs[name] = (gateway, [psutil.Process(system.processes[-1].handle.pid),
                                     psutil.Process(worker.handle.pid)])
        report(upstream, token, pairs, args)
    finally:
        system.stop()
        redis_server.stop()
        sink.shutdown()
        sink.server_close()


def report(upstream: str, token: str, pairs: dict[str, tuple[str, list[psutil.Process]]],
           args: argparse.Namespace) -> None:
    targets = {"direct": (f"{upstream}/chat/completions", UPSTREAM_FAST),
               **{f"tracing {name}": (f"{gateway}/v1/chat/completions", name) for name, (gateway, _) in pairs.items()}}
    results = asyncio.run(sequential(targets, token, args.sequential))
    print(f"\n== concurrency 1, {args.sequential} streamed requests of 64 chunks each (interleaved)")
    direct = pct([timing.ttft for timing in results["direct"]], .5)
    for label, timings in results.items():
        ttft = pct([timing.ttft for timing in timings], .5)
        print(f"  {label:>12}: time to first token p50 {ttft:6.2f} ms (added {ttft - direct:+6.2f} ms)")
    print(f"\n== concurrency {args.concurrency}, {args.requests} streamed requests of 64 chunks each")
    spent = {}
    for name, (gateway, processes) in pairs.items():
        before = cpu_seconds(processes)
        elapsed, _ = asyncio.run(concurrent(f"{gateway}/v1/chat/completions", token, name, args.requests,
                                            args.concurrency))
        spent[name] = (cpu_seconds(processes) - before) / args.requests * 1000
        print(f"  tracing {name:>3}: {args.requests / elapsed:7.1f} req/s, gateway + worker CPU per request "
              f"{spent[name]:.2f} ms")
    print(f"  tracing on costs {spent['on'] / spent['off']:.2f}x the CPU of tracing off")
    helpers = min(timeit.repeat(untraced_helpers, number=10_000, repeat=5)) / 10_000 * 1e6
    print(f"  tracing off: the request path's tracing calls take {helpers:.2f} us per request, "
          f"{helpers / (spent['off'] * 1000) * 100:.3f} % of its CPU")


if __name__ == "__main__":
    main()

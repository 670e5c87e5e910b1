"""What the installation's size costs a request, measured side by side in one run.

Two installations, each with its own database, Redis, gateway and openai_compat worker in front of the same
fast fake upstream: a small one (one model, one group, one user) and a big one (1,000 registered models,
all granted to the benchmark's group, 100,000 users each with a token and a group of a hundred, and a year of
usage rows, a tenth of them charged to the benchmark's group, which has a monthly budget so that admission
reads its spend). For both it prints, with the big one's ratio to the small one's (target: within 10 %):

1. CPU of gateway + worker + Redis per streamed request of 64 chunks at concurrency 50;
2. time to first token p50 at concurrency 1;
3. the first request of each of 50 new users' tokens (members of the benchmark's group the gateway has not
   seen: authentication and permissions are read from the database), time to first token p50;
4. the gateway's resident memory after the load.

Run with ``python -m bench.scale`` (``--usage-rows``, ``--users`` and ``--models`` change the big one).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import secrets
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import psutil
from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import Connection
from sqlmodel import col

from bench.overhead import UPSTREAM_FAST, concurrent, cpu_seconds, pct, stream_once
from modelport.db.secrets import new_token
from modelport.db.tables import LLM, ApiToken, Grant, Group, Membership, UsageRecord, User
from tests.servers import Process, RedisServer, free_port, wait_for_port
from tests.system import System

NEW_TOKENS = 50
BATCH = 20_000


@dataclass
class Installation:
    name: str
    system: System
    redis: RedisServer
    gateway: str
    token: str
    new_tokens: list[str]
    processes: list[psutil.Process]
    gateway_process: psutil.Process


def install(name: str, root: Path, upstream: str, big: argparse.Namespace | None) -> Installation:
    redis_server = RedisServer()
    redis_server.start()
    database = root / f"{name}.db"
    system = System(f"sqlite:///{database}", redis_server, root, MODELPORT_LOG_LEVEL="WARNING")
    system.cli("llm", "add", "fast", "--backend", "openai_compat", "--base-url", upstream, "--upstream-model",
               UPSTREAM_FAST, "--concurrency", "256", "--max-queue", "4096")
    system.cli("group", "add", "bench")
    system.cli("group", "grant", "bench", "fast")
    system.cli("user", "add", "bench")
    system.cli("user", "join", "bench", "bench")
    system.cli("limit", "set", "group", "bench", "--budget-month", "1000000")
    token = system.cli("token", "create", "bench").strip().splitlines()[-1]
    new_tokens = newcomers(f"sqlite:///{database}", NEW_TOKENS)
    if big is not None:
        started = time.monotonic()
        seed(f"sqlite:///{database}", big.models, big.users, big.usage_rows)
        print(f"  seeded the big installation in {time.monotonic() - started:.0f} s")
    gateway = system.gateway()
    gateway_process = psutil.Process(system.processes[-1].handle.pid)
    [worker] = system.workers("fast")
    assert redis_server.process is not None
    processes = [gateway_process, psutil.Process(worker.handle.pid), psutil.Process(redis_server.process.pid)]
    return Installation(name, system, redis_server, gateway, token, new_tokens, processes, gateway_process)


def newcomers(database_url: str, count: int) -> list[str]:
    """``count`` new users of the benchmark's group, each with a token: their secrets."""
    engine = create_engine(database_url)
    now = datetime.now(UTC).replace(tzinfo=None)
    tokens = [new_token() for _ in range(count)]
    with engine.begin() as db:
        bench_group = int(db.execute(select(col(Group.id)).where(col(Group.name) == "bench")).scalar_one() or 0)
        user_ids = _rows(db, User, [{"name": f"newcomer-{i:02d}", "display_name": "", "source": "local",
                                     "is_admin": False, "active": True, "session_version": 0, "created_at": now}
                                    for i in range(count)])
        db.execute(insert(Membership), [{"user_id": user_id, "group_id": bench_group} for user_id in user_ids])
        db.execute(insert(ApiToken), [{"user_id": user_id, "name": "", "prefix": token.prefix,
                                       "secret_hash": token.secret_hash, "created_at": now}
                                      for user_id, token in zip(user_ids, tokens, strict=True)])
    engine.dispose()
    return [token.secret for token in tokens]


def seed(database_url: str, models: int, users: int, usage_rows: int) -> None:
    """Bulk rows, as an installation that has grown would have them."""
    engine = create_engine(database_url)
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as db:
        bench_group = int(db.execute(select(col(Group.id)).where(col(Group.name) == "bench")).scalar_one() or 0)
        bench_user = int(db.execute(select(col(User.id)).where(col(User.name) == "bench")).scalar_one() or 0)
        llm_ids = _rows(db, LLM, [{"name": f"model-{i:04d}", "backend": "fake", "config": {}, "enabled": True,
                                   "max_queue": 256, "fallbacks": [], "deployments": {}, "input_price": 0.1,
                                   "output_price": 0.4, "kind": "chat", "scale_to_zero": False, "created_at": now}
                                  for i in range(models - 1)])
        db.execute(insert(Grant), [{"group_id": bench_group, "llm_id": llm_id} for llm_id in llm_ids])
        group_ids = _rows(db, Group, [{"name": f"team-{i:04d}", "description": "", "permissions": [], "priority": 0,
                                       "created_at": now} for i in range(max(1, users // 100))])
        for start in range(0, users, BATCH):
            count = min(BATCH, users - start)
            user_ids = _rows(db, User, [{"name": f"person-{start + i:06d}", "display_name": "", "source": "local",
                                         "is_admin": False, "active": True, "session_version": 0,
                                         "created_at": now} for i in range(count)])
            db.execute(insert(Membership), [{"user_id": user_id, "group_id": group_ids[index % len(group_ids)]}
                                            for index, user_id in enumerate(user_ids)])
            db.execute(insert(ApiToken), [
                {"user_id": user_id, "name": "", "prefix": f"mp-{secrets.token_hex(4)}",
                 "secret_hash": hashlib.sha256(secrets.token_bytes(32)).hexdigest(), "created_at": now}
                for user_id in user_ids])
        names = [f"model-{i:04d}" for i in range(models - 1)] + ["fast"]
        for start in range(0, usage_rows, BATCH):
            db.execute(insert(UsageRecord), [_usage(now, start + i, names, group_ids, bench_group, bench_user)
                                             for i in range(min(BATCH, usage_rows - start))])
    engine.dispose()


def _rows(db: Connection, table: type, rows: list[dict[str, object]]) -> list[int]:
    """Insert ``rows`` and return their ids, in order."""
    ids: list[int] = []
    for start in range(0, len(rows), BATCH):
        result = db.execute(insert(table).returning(table.id), rows[start:start + BATCH])  # type: ignore[attr-defined]
        ids += [row[0] for row in result]
    return ids


def _usage(now: datetime, index: int, names: list[str], group_ids: list[int], bench_group: int,
           bench_user: int) -> dict[str, object]:
    ours = index % 10 == 0  # a tenth charged to the benchmark's group
    return {"created_at": now - timedelta(seconds=random.randrange(365 * 86400)), "job_id": f"chatcmpl-{index}",
            "user_id": bench_user if ours else random.randrange(1, 100_000), "token_id": None,
            "model": random.choice(names), "stream": True, "status": 200, "prompt_tokens": 20,
            "completion_tokens": 64, "latency_ms": 300, "ttft_ms": 20, "cost": 0.0001,
            "group_id": bench_group if ours else random.choice(group_ids), "endpoint": "chat"}


async def first_requests(installation: Installation) -> list[float]:
    async with aiohttp.ClientSession() as session:
        return [(await stream_once(session, f"{installation.gateway}/v1/chat/completions", token, "fast")).ttft
                for token in installation.new_tokens]


def measure(installation: Installation, requests: int, concurrency: int, sequential: int) -> dict[str, float]:
    url = f"{installation.gateway}/v1/chat/completions"
    figures = {"first request of a new token: TTFT p50 ms": pct(asyncio.run(first_requests(installation)), .5)}

    async def one_by_one() -> list[float]:
        async with aiohttp.ClientSession() as session:
            return [(await stream_once(session, url, installation.token, "fast")).ttft for _ in range(sequential)]

    figures["concurrency 1: TTFT p50 ms"] = pct(asyncio.run(one_by_one()), .5)
    before = cpu_seconds(installation.processes)
    asyncio.run(concurrent(url, installation.token, "fast", requests, concurrency))
    figures[f"concurrency {concurrency}: CPU per request ms"] = \
        (cpu_seconds(installation.processes) - before) / requests * 1000
    figures["gateway RSS MB"] = installation.gateway_process.memory_info().rss / 2**20
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--usage-rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--sequential", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="modelport-bench-scale-"))
    port = free_port()
    upstream = Process(["tests.upstreams.openai_server", "--port", str(port)], {}, root / "upstream.log")
    wait_for_port(port)
    installations: list[Installation] = []
    try:
        print(f"== a small installation beside a big one ({args.models} models, {args.users} users and tokens, "
              f"{args.usage_rows} usage rows over a year)")
        for name, big in (("small", None), ("big", args)):
            installations.append(install(name, root, f"http://127.0.0.1:{port}/v1", big))
        small, big_one = (measure(installation, args.requests, args.concurrency, args.sequential)
                          for installation in installations)
        for label, value in small.items():
            print(f"  {label:>42}: small {value:8.2f} | big {big_one[label]:8.2f} | big/small "
                  f"{big_one[label] / value:5.2f} (target <= 1.10)")
    finally:
        for installation in installations:
            installation.system.stop()
            installation.redis.stop()
        upstream.stop()


if __name__ == "__main__":
    main()

"""A bounded soak: mixed traffic with random client disconnects and worker kills for a few minutes, then
checks that no request hung, that every job that reached the gateway has exactly one usage record, and
that the gateway's memory stayed flat.

Run with ``python -m bench.soak --seconds 180`` (after ``make deps``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import psutil
from sqlmodel import select

from modelport.db.engine import create_engine, session_factory
from modelport.db.tables import UsageRecord
from tests.servers import Process, RedisServer
from tests.system import System

MODEL = "soak"


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    job_ids: set[str] = field(default_factory=set)
    hung: int = 0


async def one_request(session: aiohttp.ClientSession, base: str, token: str, tally: Tally) -> None:
    stream = random.random() < 0.7
    drop_after = random.randint(1, 10) if stream and random.random() < 0.3 else None
    body = {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "soak"}]}
    try:
        async with asyncio.timeout(60), session.post(f"{base}/v1/chat/completions", json=body,
                                                     headers={"Authorization": f"Bearer {token}"}) as response:
            if response.status != 200:
                tally.outcomes[f"http {response.status}"] += 1
                return
            if not stream:
                tally.job_ids.add((await response.json())["id"])
                tally.outcomes["completed"] += 1
                return
            frames = 0
            async for line in response.content:
                if line.startswith(b"data: {"):
                    payload = orjson.loads(line[6:])
                    if "id" in payload:
                        tally.job_ids.add(payload["id"])
                    frames += 1
                    if drop_after is not None and frames >= drop_after:
                        tally.outcomes["dropped by client"] += 1
                        return
                elif line.startswith(b"data: [DONE]"):
                    tally.outcomes["completed"] += 1
                    return
    except TimeoutError:
        tally.hung += 1
    except aiohttp.ClientError:
        tally.outcomes["connection error"] += 1


async def traffic(base: str, token: str, seconds: float, clients: int, tally: Tally) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def client() -> None:
            while time.monotonic() < deadline:
                await one_request(session, base, token, tally)

        await asyncio.gather(*(client() for _ in range(clients)))


async def chaos(system: System, workers: list[Process], seconds: float, every: float) -> int:
    kills = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() + every < deadline:
        await asyncio.sleep(every)
        victim = random.choice(workers)
        victim.kill()
        workers.remove(victim)
        kills += 1
        workers.extend(await asyncio.to_thread(system.workers, MODEL))
    return kills


async def usage_counts(database_url: str) -> Counter[str]:
    engine = create_engine(database_url)
    async with session_factory(engine)() as session:
        rows = (await session.exec(select(UsageRecord.job_id))).all()
    await engine.dispose()
    return Counter(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--kill-every", type=float, default=15)
    args = parser.parse_args()
    redis_server = RedisServer()
    redis_server.start()
    root = Path(tempfile.mkdtemp(prefix="modelport-soak-"))
    system = System(f"sqlite:///{root / 'db.sqlite'}", redis_server, root, MODELPORT_LOG_LEVEL="WARNING",
                    MODELPORT_LEASE_MS="1500", MODELPORT_HEARTBEAT_S="0.3")
    try:
        system.cli("llm", "add", MODEL, "--backend", "fake", "--delay-ms", "30", "--chunks", "30")
        token = system.user_with_token(MODEL)
        base = system.gateway()
        gateway = psutil.Process(system.processes[-1].handle.pid)
        workers = system.workers(MODEL, MODEL, MODEL)
        tally = Tally()

        async def run() -> tuple[int, list[int]]:
            samples: list[int] = []

            async def sample() -> None:
                while True:
                    samples.append(gateway.memory_info().rss)
                    await asyncio.sleep(5)

            sampler = asyncio.create_task(sample())
            kills, _ = await asyncio.gather(chaos(system, workers, args.seconds, args.kill_every),
                                            traffic(base, token, args.seconds, args.clients, tally))
            sampler.cancel()
            return kills, samples

        kills, samples = asyncio.run(run())
        time.sleep(8)
        records = asyncio.run(usage_counts(system.database_url))
        missing = [job for job in tally.job_ids if records[job] == 0]
        doubled = [job for job, count in records.items() if count > 1]
        print(f"soak: {args.seconds:.0f} s, {args.clients} clients, {kills} worker kills")
        print(f"  requests: {sum(tally.outcomes.values()) + tally.hung} ({dict(tally.outcomes)}); hung: {tally.hung}")
        print(f"  usage records: {sum(records.values())} for {len(tally.job_ids)} jobs seen by clients; "
              f"missing {len(missing)}, double-counted {len(doubled)}")
        settled = samples[len(samples) // 4:] or samples
        print(f"  gateway RSS: start {samples[0] / 2**20:.0f} MB, after warm-up {settled[0] / 2**20:.0f} MB, "
              f"end {samples[-1] / 2**20:.0f} MB, peak {max(samples) / 2**20:.0f} MB")
    finally:
        system.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()

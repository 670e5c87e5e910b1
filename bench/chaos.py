"""A bounded chaos run: mixed traffic on two gateways and three workers while workers and a gateway are
stalled (SIGSTOP/SIGCONT) and killed, Redis stalls (SIGSTOP on redis-server) and runs out of memory for a
moment. Then it checks what the queue contract promises:

- every client received its reply exactly once (the fake model's words, each once, in order) or one clean
  error (an error status with OpenAI's envelope, or an error frame then ``[DONE]``), and none hung;
- every usage row of a completed reply counts exactly the words its client received;
- nothing is left behind: no pending entry, no waiting job, no concurrency slot, no in-flight entry, no
  consumer of a dead worker (after the sweep), and Redis holds no more keys than before the run.

Run with ``python -m bench.chaos --seconds 120`` (after ``make deps``); it prints its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import redis
from sqlmodel import select

from modelport.db.engine import create_engine, session_factory
from modelport.db.tables import UsageRecord
from modelport.protocol import keys
from tests.servers import Process, RedisServer
from tests.system import System

MODEL = "chaos"
WORDS = [f"w{i:02d}" for i in range(24)]
REPLY = " ".join(WORDS)
LEASE = {"MODELPORT_LEASE_MS": "1500", "MODELPORT_HEARTBEAT_S": "0.3", "MODELPORT_GATEWAY_LEASE_S": "3",
         "MODELPORT_LOG_LEVEL": "WARNING"}


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    received: dict[str, str] = field(default_factory=dict)  # job id -> text of a completed reply
    wrong: list[str] = field(default_factory=list)  # replies that were not the model's words exactly once


def verdict(tally: Tally, job: str, text: str, ended: str) -> None:
    if ended == "done":
        if text != REPLY:
            tally.wrong.append(text)
        tally.received[job] = text
        tally.outcomes["completed"] += 1
    else:
        tally.outcomes[f"clean error: {ended}"] += 1


async def one_request(session: aiohttp.ClientSession, bases: list[str], token: str, tally: Tally) -> None:
    stream = random.random() < 0.7
    body = {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "chaos"}]}
    try:
        async with asyncio.timeout(90), session.post(f"{random.choice(bases)}/v1/chat/completions", json=body,
                                                     headers={"Authorization": f"Bearer {token}"}) as response:
            if response.status != 200:
                error = (await response.json())["error"]
                tally.outcomes[f"clean error: {response.status} {error['code']}"] += 1
                return
            if not stream:
                answer = await response.json()
                verdict(tally, answer["id"], answer["choices"][0]["message"]["content"], "done")
                return
            await read_stream(response, tally)
    except TimeoutError:
        tally.outcomes["HUNG"] += 1
    except (aiohttp.ClientError, ConnectionError):
        tally.outcomes["connection lost (gateway killed)"] += 1


async def read_stream(response: aiohttp.ClientResponse, tally: Tally) -> None:
    job, text, ended = "", "", "no [DONE]"
    async for line in response.content:
        if line.startswith(b"data: [DONE]"):
            break
        if not line.startswith(b"data: {"):
            continue
        payload = orjson.loads(line[6:])
        if "error" in payload:
            ended = f"error frame {payload['error']['code']}"
            continue
        job = job or payload["id"]
        text += "".join(choice["delta"].get("content") or "" for choice in payload["choices"])
        if any(choice.get("finish_reason") for choice in payload["choices"]):
            ended = "done"
    verdict(tally, job, text, ended)


async def traffic(bases: list[str], token: str, seconds: float, clients: int, tally: Tally) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def client() -> None:
            while time.monotonic() < deadline:
                await one_request(session, bases, token, tally)

        await asyncio.gather(*(client() for _ in range(clients)))


@dataclass
class Chaos:
    system: System
    redis_server: RedisServer
    workers: list[Process]
    bases: list[str]  # the gateways clients use (a killed one's replacement takes its place)
    gateways: list[Process]
    actions: Counter[str] = field(default_factory=Counter)

    async def run(self, seconds: float, every: float) -> None:
        deadline = time.monotonic() + seconds - 10  # the last seconds are calm: everything may end
        while time.monotonic() < deadline:
            await asyncio.sleep(random.uniform(0.5, 1.5) * every)
            action = random.choice([self.stall_worker, self.stall_worker, self.kill_worker, self.stall_redis,
                                    self.fill_redis, self.stall_gateway, self.kill_gateway])
            self.actions[action.__name__] += 1
            await action()

    async def stall_worker(self) -> None:
        await self._stall(random.choice(self.workers).handle.pid, random.uniform(2.0, 5.0))

    async def kill_worker(self) -> None:
        victim = random.choice(self.workers)
        victim.kill()
        self.workers.remove(victim)
        self.workers.extend(await asyncio.to_thread(self.system.workers, MODEL))

    async def stall_redis(self) -> None:
        assert self.redis_server.process is not None
        await self._stall(self.redis_server.process.pid, random.uniform(1.0, 6.0))

    async def fill_redis(self) -> None:
        admin = redis.Redis.from_url(self.redis_server.url)
        admin.config_set("maxmemory", "1")
        await asyncio.sleep(random.uniform(0.5, 2.0))
        admin.config_set("maxmemory", "0")
        admin.close()

    async def stall_gateway(self) -> None:
        await self._stall(random.choice(self.gateways).handle.pid, random.uniform(1.0, 4.0))

    async def kill_gateway(self) -> None:
        """Clients of a killed gateway lose their connection (counted apart); what it held expires by lease."""
        index = random.randrange(len(self.gateways))
        self.gateways[index].kill()
        self.bases[index] = await asyncio.to_thread(self.system.gateway, **LEASE)
        self.gateways[index] = self.system.processes[-1]

    async def _stall(self, pid: int, seconds: float) -> None:
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)


async def usage_rows(database_url: str) -> dict[str, list[int]]:
    engine = create_engine(database_url)
    async with session_factory(engine)() as session:
        rows = (await session.exec(select(UsageRecord.job_id, UsageRecord.completion_tokens))).all()
    await engine.dispose()
    found: dict[str, list[int]] = {}
    for job, tokens in rows:
        found.setdefault(job, []).append(tokens)
    return found


def leftovers(redis_server: RedisServer, workers: list[Process]) -> dict[str, int]:
    client = redis.Redis.from_url(redis_server.url)
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    _rotation, _waiting_jobs, bodies, _turn, waiting = keys.fair_queue(MODEL)
    held = sum(int(client.zcount(key, now_ms, "+inf")) for pattern in ("mp:{user:*}:in-flight", "mp:{lim:*}:running",
                                                                       f"mp:{{{MODEL}}}:user:*")
               for key in client.scan_iter(pattern))
    consumers = [consumer["name"].decode() for consumer in client.xinfo_consumers(keys.jobs(MODEL), keys.WORKER_GROUP)]
    dead = [name for name in consumers if not any(f"-{worker.handle.pid}-" in name for worker in workers)]
    found = {"pending entries": int(client.xpending(keys.jobs(MODEL), keys.WORKER_GROUP)["pending"]),
             "waiting jobs": int(client.get(waiting) or 0) + int(client.hlen(bodies)),
             "held slots and entries": held, "consumers of dead workers": len(dead),
             "started marks of ended jobs": int(client.hlen(keys.started(MODEL)))}
    client.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--every", type=float, default=4.0, help="mean seconds between two acts of chaos")
    args = parser.parse_args()
    redis_server = RedisServer()
    redis_server.start()
    root = Path(tempfile.mkdtemp(prefix="modelport-chaos-"))
    system = System(f"sqlite:///{root / 'db.sqlite'}", redis_server, root, **LEASE)
    try:
        system.cli("llm", "add", MODEL, "--backend", "fake", "--reply", REPLY, "--delay-ms", "40",
                   "--config", '{"first_delay_ms": 100}', "--max-queue", "4096")
        token = system.user_with_token(MODEL, user="chaos")
        system.cli("limit", "set", "user", "chaos", "--concurrent", "1000")
        bases, gateways = [], []
        for _ in range(2):
            bases.append(system.gateway(**LEASE))
            gateways.append(system.processes[-1])
        workers = system.workers(MODEL, MODEL, MODEL)
        keys_before = redis.Redis.from_url(redis_server.url).dbsize()
        tally = Tally()
        chaos = Chaos(system, redis_server, workers, bases, gateways)

        async def run() -> None:
            await asyncio.gather(chaos.run(args.seconds, args.every),
                                 traffic(bases, token, args.seconds, args.clients, tally))

        asyncio.run(run())
        time.sleep(20)  # leases (3 s), the consumer sweep (ten worker leases) and usage flushes
        rows = asyncio.run(usage_rows(system.database_url))
        missing = [job for job in tally.received if job not in rows]
        mismatched = [(job, rows[job]) for job, text in tally.received.items()
                      if job in rows and rows[job] != [len(text.split())]]
        left = leftovers(redis_server, workers)
        keys_after = sorted(key.decode() for key in redis.Redis.from_url(redis_server.url).scan_iter())
        print(f"chaos: {args.seconds:.0f} s, {args.clients} clients, acts: {dict(chaos.actions)}")
        print(f"  requests: {sum(tally.outcomes.values())} {dict(tally.outcomes)}")
        print(f"  replies not exactly the model's words once: {len(tally.wrong)} {tally.wrong[:2]}")
        print(f"  completed replies without a usage row: {len(missing)} of {len(tally.received)} (rows a killed "
              "gateway had not yet written: they are written in batches, once a second)")
        print(f"  usage rows not counting what the client received: {len(mismatched)} {mismatched[:3]}")
        print(f"  left behind: {left}; Redis keys before {keys_before}, after {len(keys_after)}: {keys_after}")
    finally:
        system.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()

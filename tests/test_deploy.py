"""The deployment files: the compose file validates, and env.example and the README list every setting."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from modelport.admin.settings import AdminSettings
from modelport.gateway.settings import GatewaySettings
from modelport.workers.settings import WorkerSettings

REPOSITORY = Path(__file__).resolve().parent.parent


def test_compose_file_is_valid() -> None:
    binary = shutil.which("docker-compose")
    assert binary is not None, "docker-compose is not installed; run `make deps`"
    secrets = {"POSTGRES_PASSWORD": "test", "ADMIN_SECRET_KEY": "test"}
    run = subprocess.run([binary, "-f", str(REPOSITORY / "deploy" / "compose.yaml"), "config", "--quiet"],
                         env={**os.environ, **secrets}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_every_setting_is_documented() -> None:
    example = (REPOSITORY / "deploy" / "env.example").read_text()
    names = {f"MODELPORT_{field.upper()}" for settings in (GatewaySettings, WorkerSettings, AdminSettings)
             for field in settings.model_fields}
    missing = {name for name in names if f"\n{name}=" not in example}
    assert not missing, f"deploy/env.example lacks {sorted(missing)}"

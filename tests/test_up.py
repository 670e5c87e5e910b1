"""``modelport up`` (what ``make run`` runs) on a fresh directory: embedded Valkey, SQLite, the bundled
Gemma model; the curl line it prints works, and stopping it stops everything it started."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.servers import free_port
from tests.waiting import until


def test_up_serves_the_bundled_model_and_prints_a_working_curl_line(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MODELPORT_")}
    port = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as output:
        up = subprocess.Popen([sys.executable, "-m", "modelport", "up", "--port", str(port), "--admin-port",
                               str(free_port())], cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "Press Ctrl-C to stop." not in log.read_text() and time.monotonic() < deadline:
            assert up.poll() is None, log.read_text()
            time.sleep(0.2)
        banner = log.read_text()
        curl = re.search(r"^\s*(curl http\S+ .*)$", banner, re.MULTILINE)
        assert curl is not None, banner
        answer = subprocess.run([*shlex.split(curl.group(1)), "-s", "--max-time", "60"], capture_output=True,
                                text=True)
        assert answer.returncode == 0, (answer.returncode, log.read_text())
        assert '"object":"chat.completion"' in answer.stdout and '"model":"gemma-3-270m"' in answer.stdout
        before_banner = banner.split("ModelPort is up.")[0].strip().splitlines()
        assert len(before_banner) <= 6 and all(line.startswith(("starting", "preparing", "waiting"))
                                               for line in before_banner), banner
        home = tmp_path / ".modelport"
        logs = {path.name for path in (home / "logs").iterdir()}
        assert logs == {"gateway.log", "admin.log", "worker-gemma-3-270m.log"}
        assert "Uvicorn running" in (home / "logs" / "gateway.log").read_text()
        assert (home / "modelport.db").exists()
        assert home.stat().st_mode & 0o777 == 0o700 and (home / "credentials.json").stat().st_mode & 0o777 == 0o600
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 4, [child.cmdline() for child in children]
        [worker] = [child for child in children if "worker" in child.cmdline()]
        environment = worker.environ()
        assert "MODELPORT_DATABASE_URL" not in environment and "MODELPORT_ADMIN_SECRET_KEY" not in environment
        assert "worker-gemma-3-270m:" in environment["MODELPORT_REDIS_URL"], "the worker has its own Redis user"
        [valkey] = [child for child in children if "valkey" in " ".join(child.cmdline())]
        [port] = {conn.laddr.port for conn in valkey.net_connections("tcp") if conn.status == psutil.CONN_LISTEN}
        anonymous = subprocess.run(["redis-cli", "-p", str(port), "get", "x"], capture_output=True, text=True)
        assert "NOPERM" in anonymous.stdout + anonymous.stderr, "the embedded Valkey needs a password"
        admin = re.search(r"admin:\s+(http\S+)", banner)
        assert admin is not None
        assert httpx.get(admin.group(1) + "/login").status_code == 200
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
    until(lambda: not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE],
          "everything modelport up started has stopped", timeout=10)

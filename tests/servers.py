"""Real servers for the tests: Redis and PostgreSQL on free loopback ports, and ModelPort's own processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from glob import glob
from pathlib import Path
from typing import Protocol, TypeVar

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


class Server(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


ServerT = TypeVar("ServerT", bound=Server)


def running(server: ServerT) -> Iterator[ServerT]:
    """Start a server for a fixture, yield it, and stop it afterwards."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RedisServer:
    """A private redis-server (Debian's package), restartable on the same port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run `make deps` (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--maxclients", "20000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class PostgresServer:
    """A private PostgreSQL cluster (Debian's package) in a temporary directory."""

    def __init__(self) -> None:
        candidates = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
        if not candidates:
            raise RuntimeError("PostgreSQL is not installed; run `make deps` (apt-get install postgresql)")
        self.bindir = Path(candidates[-1]).parent
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="modelport-pg-"))
        self.process: subprocess.Popen[bytes] | None = None

    def _as_owner(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def start(self) -> None:
        data = self.directory / "data"
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        subprocess.run(self._as_owner([str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                       "--no-sync"]), check=True, stdout=subprocess.DEVNULL)
        self.process = subprocess.Popen(
            self._as_owner([str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-k",
                            str(self.directory), "-h", "127.0.0.1", "-c", "fsync=off", "-c", "max_connections=300"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        time.sleep(0.3)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        for _ in range(50):
            result = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c",
                                     f'CREATE DATABASE "{name}"'], capture_output=True)
            if result.returncode == 0:
                return self.url(name)
            time.sleep(0.1)
        raise RuntimeError(result.stderr.decode())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
        shutil.rmtree(self.directory, ignore_errors=True)


class Process:
    """A ModelPort (or test upstream) process, run as ``python -m MODULE ARGS``."""

    def __init__(self, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.log = log
        self.handle = subprocess.Popen([sys.executable, "-m", *args], env={**os.environ, **env},
                                       stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.handle.poll() is None

    def kill(self) -> None:
        self.handle.kill()
        self.handle.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.handle.terminate()
            try:
                self.handle.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_healthy(base_url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} did not become healthy")

"""Real servers for the tests: Redis and PostgreSQL on free loopback ports, and ModelPort's own processes."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from glob import glob
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import redis

from modelport.cli.redis_acl import redis_url
from modelport.protocol import acl
from tests.waiting import until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    until(listening, f"something listens on port {port}", timeout)


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
    """A private redis-server (Debian's package), restartable on the same port, with ModelPort's ACL users:
    the harness's own ``default`` (every right), the gateways' ``modelport`` and, once asked for, one
    ``worker-MODEL`` per model, saved in the ACL file so they survive restarts. With ``tls``, it speaks only
    TLS (a self-signed certificate the URLs name as their CA)."""

    def __init__(self, tls: bool = False, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run `make deps` (apt-get install redis-server)")
        self.binary = binary
        self.port = port or free_port()
        self.tls = tls
        self.directory = Path(tempfile.mkdtemp(prefix="modelport-redis-"))
        self.acl_path = self.directory / "users.acl"
        password = secrets.token_urlsafe(16)
        self._base = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"
        if tls:
            self._certificate()
            self._base += f"?ssl_ca_certs={self.directory / 'cert.pem'}"
        self.password = password  # the harness's own ``default`` user's
        self.url = redis_url(self._base, "default", password)
        gateway_password = secrets.token_urlsafe(16)
        self.gateway_url = redis_url(self._base, acl.GATEWAY_USER, gateway_password)
        self.acl_path.write_text(f"user default on >{password} ~* &* +@all\n"
                                 + acl.user_line(acl.GATEWAY_USER, gateway_password, acl.GATEWAY_RULES) + "\n")
        self._workers: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None

    def _certificate(self) -> None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
                        str(self.directory / "key.pem"), "-out", str(self.directory / "cert.pem")],
                       check=True, capture_output=True)

    def start(self) -> None:
        listen = ["--port", str(self.port)]
        if self.tls:
            certificate = str(self.directory / "cert.pem")
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", certificate,
                      "--tls-key-file", str(self.directory / "key.pem"), "--tls-ca-cert-file", certificate,
                      "--tls-auth-clients", "no"]
        self.process = subprocess.Popen(
            [self.binary, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--maxclients", "20000", "--aclfile", str(self.acl_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def client(self) -> redis.Redis:
        """A client of the harness's own (``default``), wherever the keys it asks for are."""
        return redis.Redis.from_url(self.url)

    def worker_url(self, model: str) -> str:
        """The URL a worker of ``model`` connects with: its own ACL user, created on first use."""
        if model not in self._workers:
            password = secrets.token_urlsafe(16)
            client = redis.Redis.from_url(self.url)
            command: Any = client.execute_command  # untyped in redis-py
            command("ACL", "SETUSER", acl.worker_user(model), *acl.setuser_args(password, acl.worker_rules(model)))
            command("ACL", "SAVE")
            client.close()
            self._workers[model] = password
        return redis_url(self._base, acl.worker_user(model), self._workers[model])

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
        wait_for_port(self.port)  # create_database retries while the server still starts up

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
        with log.open("ab") as output:  # the child has its own copy of the descriptor
            self.handle = subprocess.Popen([sys.executable, "-m", *args], env={**os.environ, **env},
                                           stdout=output, stderr=subprocess.STDOUT)

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
    def healthy() -> bool:
        try:
            return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    until(healthy, f"{base_url} is healthy", timeout)

"""A Sentinel-managed Redis for tests: a primary and a replica, each with ModelPort's ACL users (as an
operator's shared ACL file gives them), watched by three Sentinels, all on loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Any

import redis

from modelport.cli.redis_acl import redis_url
from modelport.protocol import acl
from tests.servers import RedisServer, free_port, wait_for_port

SERVICE = "modelport"
DOWN_AFTER_MS = 1000  # a primary silent this long is down; the failover follows within seconds


class SentinelRedis(RedisServer):
    """This server starts as the primary; ``replica_port`` replicates it; ``sentinel_ports`` watch both."""

    def __init__(self) -> None:
        super().__init__()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def env(self) -> dict[str, str]:
        """What every ModelPort process is given to follow the primary."""
        return {"MODELPORT_REDIS_SENTINELS": ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports),
                "MODELPORT_REDIS_SENTINEL_SERVICE": SERVICE}

    def start(self) -> None:
        super().start()
        assert self.process is not None
        self.processes[self.port] = self.process
        replica_acl = self.directory / "replica.acl"
        shutil.copy(self.acl_path, replica_acl)
        self.processes[self.replica_port] = subprocess.Popen(
            [self.binary, "--port", str(self.replica_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--aclfile", str(replica_acl), "--replicaof", "127.0.0.1", str(self.port),
             "--masteruser", "default", "--masterauth", self.password],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.replica_port)
        for port in self.sentinel_ports:
            config = self.directory / f"sentinel-{port}.conf"
            config.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", "sentinel resolve-hostnames no",
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.port} 2",
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SERVICE} 5000",
                f"sentinel auth-user {SERVICE} default", f"sentinel auth-pass {SERVICE} {self.password}", ""]))
            self.processes[port] = subprocess.Popen([self.binary, str(config), "--sentinel"],
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_port(port)
        self._wait_until_replicated()

    def _wait_until_replicated(self) -> None:
        client = redis.Redis(port=self.replica_port, password=self.password)
        deadline = time.monotonic() + 20
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.1)
        client.close()

    def primary_port(self) -> int:
        """The primary's port, as the Sentinels name it now."""
        client = redis.Redis(port=self.sentinel_ports[0])
        command: Any = client.execute_command  # untyped in redis-py
        _host, port = command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        client.close()
        return int(port)

    def kill_primary(self) -> int:
        """SIGKILL the current primary; its port."""
        port = self.primary_port()
        process = self.processes.pop(port)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        return port

    def worker_url(self, model: str) -> str:
        """The model's worker user, created on every running node (ACLs are not replicated)."""
        if model not in self._workers:
            password = self._workers[model] = os.urandom(12).hex()
            for port in (self.port, self.replica_port):
                if port not in self.processes:
                    continue
                client = redis.Redis(port=port, password=self.password)
                command: Any = client.execute_command
                command("ACL", "SETUSER", acl.worker_user(model), *acl.setuser_args(password, acl.worker_rules(model)))
                command("ACL", "SAVE")
                client.close()
        return redis_url(self._base, acl.worker_user(model), self._workers[model])

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.wait(timeout=10)
        self.processes.clear()
        self.process = None


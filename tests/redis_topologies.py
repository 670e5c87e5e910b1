"""Redis as organisations run it beyond one node, for tests, on loopback ports: a Sentinel-managed primary
(a primary and a replica watched by three Sentinels) and a Redis Cluster (three primaries, each with a
replica). Every node has ModelPort's ACL users, as an operator's shared ACL file gives them (Redis does
not replicate ACLs); ``kill_node_of(model)`` kills the primary holding a model's keys."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from typing import Any, cast

import redis

from modelport.cli.redis_acl import redis_url
from modelport.protocol import acl, keys
from tests.servers import RedisServer, free_port, wait_for_port

SERVICE = "modelport"
DOWN_AFTER_MS = 1000  # a primary silent this long is down; its replica takes over within seconds


class ReplicatedRedis(RedisServer, ABC):
    """Nodes started from this server's settings and ACL file; ``self.port`` is the first node's."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port=port)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    @abstractmethod
    def env(self) -> dict[str, str]:
        """What every ModelPort process is given to reach this topology (besides MODELPORT_REDIS_URL)."""

    def node(self, port: int, *options: str) -> None:
        """Start a node on ``port`` with a copy of the ACL file; replicas authenticate as ``default``."""
        node_acl = self.directory / f"users-{port}.acl"
        shutil.copy(self.acl_path, node_acl)
        self.processes[port] = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--aclfile", str(node_acl), "--masteruser", "default", "--masterauth", self.password, *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.directory)
        wait_for_port(port)

    def wait_until_synced(self, port: int) -> None:
        """Wait until the node, if it is a replica, has synced with its primary (only then may it take over)."""
        node = self.admin(port)
        deadline = time.monotonic() + 30
        while (info := node.info("replication")).get("role") == "slave" and info.get("master_link_status") != "up":
            assert time.monotonic() < deadline, f"the replica on {port} did not sync"
            time.sleep(0.1)
        node.close()

    def admin(self, port: int) -> Any:
        """A ``default`` client of one node, its commands untyped (redis-py's execute_command is)."""
        return redis.Redis(port=port, password=self.password)

    @abstractmethod
    def node_of(self, model: str) -> int:
        """The port of the primary holding the model's keys now."""

    def kill_node_of(self, model: str) -> int:
        """SIGKILL the primary holding the model's keys; its port."""
        port = self.node_of(model)
        process = self.processes.pop(port)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        return port

    def worker_url(self, model: str) -> str:
        """The model's worker user, created on every running node."""
        if model not in self._workers:
            password = self._workers[model] = os.urandom(12).hex()
            for port in self.processes:
                if port in self.data_ports:
                    client = self.admin(port)
                    client.execute_command("ACL", "SETUSER", acl.worker_user(model),
                                           *acl.setuser_args(password, acl.worker_rules(model)))
                    client.execute_command("ACL", "SAVE")
                    client.close()
        return redis_url(self._base, acl.worker_user(model), self._workers[model])

    @property
    @abstractmethod
    def data_ports(self) -> list[int]:
        """The nodes holding data (not the Sentinels)."""

    @abstractmethod
    def start(self) -> None: ...

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.wait(timeout=10)
        self.processes.clear()


class SentinelRedis(ReplicatedRedis):
    """This server's port starts as the primary; ``replica_port`` replicates it; three Sentinels watch."""

    def __init__(self) -> None:
        super().__init__()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]

    @property
    def env(self) -> dict[str, str]:
        return {"MODELPORT_REDIS_SENTINELS": ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports),
                "MODELPORT_REDIS_SENTINEL_SERVICE": SERVICE}

    @property
    def data_ports(self) -> list[int]:
        return [self.port, self.replica_port]

    def start(self) -> None:
        self.node(self.port)
        self.node(self.replica_port, "--replicaof", "127.0.0.1", str(self.port))
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
        self.wait_until_synced(self.replica_port)

    def node_of(self, model: str) -> int:
        """The primary (all models' keys are there), as the Sentinels name it now."""
        sentinel = redis.Redis(port=self.sentinel_ports[0])
        command: Any = sentinel.execute_command
        _host, port = command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        sentinel.close()
        return int(port)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.node_of("any"), password=self.password)


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (10,000 higher) are free too: below the ephemeral range."""
    found: list[int] = []
    while len(found) < count:
        port = random.randrange(20_000, 30_000)
        if port not in found and all(_free(candidate) for candidate in (port, port + 10_000)):
            found.append(port)
    return found


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ClusterRedis(ReplicatedRedis):
    """Three primaries (this server's port among them) and a replica of each, in one Redis Cluster."""

    def __init__(self) -> None:
        ports = cluster_ports(6)
        super().__init__(port=ports[0])
        self.ports = ports

    @property
    def env(self) -> dict[str, str]:
        return {"MODELPORT_REDIS_CLUSTER": "true"}

    @property
    def data_ports(self) -> list[int]:
        return self.ports

    def start(self) -> None:
        for port in self.ports:
            self.node(port, "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                      "--cluster-node-timeout", str(DOWN_AFTER_MS))
        subprocess.run(["redis-cli", "--user", "default", "--pass", self.password, "--no-auth-warning",
                        "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
                        "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True)
        deadline = time.monotonic() + 30
        for port in self.ports:
            node = self.admin(port)
            while b"cluster_state:ok" not in node.execute_command("CLUSTER", "INFO"):
                assert time.monotonic() < deadline, "the cluster did not form"
                time.sleep(0.1)
            node.close()
        for port in self.ports:
            self.wait_until_synced(port)

    def node_of(self, model: str) -> int:
        cluster = cast(Any, self.client())
        port = int(cluster.get_node_from_key(keys.jobs(model)).port)
        cluster.close()
        return port

    def client(self) -> redis.Redis:
        live = next(port for port in self.ports if port in self.processes)
        return cast(redis.Redis, redis.RedisCluster(host="127.0.0.1", port=live, password=self.password))

"""A Redis Sentinel group for tests: a primary, a replica and three sentinels on loopback."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from tests.servers import RedisServer, free_port, redis_binary, wait_for

SERVICE = "tasklane"


class SentinelGroup:
    """redis-server processes of the test's own: primary, replica (``--replicaof``), 3 sentinels."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.binary = redis_binary()
        self.servers = [
            RedisServer(directory / "a", binary=self.binary),
            RedisServer(directory / "b", binary=self.binary),
        ]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The redis+sentinel:// URL of the group's service, database 0."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def sentinel(self, n: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.sentinel_ports[n], socket_timeout=5)

    def primary_port(self) -> int:
        """The primary's port as the first sentinel answers it."""
        _host, port = self.sentinel().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def start(self) -> SentinelGroup:
        primary, replica = self.servers
        primary.start()
        replica.start()
        replica.client().replicaof("127.0.0.1", primary.port)
        wait_for(
            lambda: primary.client().info("replication")["connected_slaves"] >= 1, 15, message="the replica"
        )
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"logfile {self.directory / f'sentinel-{port}.log'}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 4000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [self.binary, str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

        def ready() -> bool:
            try:
                return all(
                    len(self.sentinel(n).sentinel_slaves(SERVICE)) >= 1
                    and int(self.sentinel(n).sentinel_master(SERVICE)["num-other-sentinels"]) >= 2
                    for n in range(3)
                )
            except redis.RedisError:
                return False

        wait_for(ready, 30, 0.2, "the sentinels to see the primary, the replica and each other")
        return self

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        for server in self.servers:
            server.stop()

    def wait_new_primary(self, old_port: int, timeout: float = 30) -> float:
        """Wait until the sentinels name another primary and it accepts writes; the seconds it took."""
        started = time.monotonic()

        def promoted() -> bool:
            try:
                port = self.primary_port()
                return port != old_port and self.server(port).client().info("replication")["role"] == "master"
            except (redis.RedisError, StopIteration):
                return False

        wait_for(promoted, timeout, 0.1, "a new primary")
        return time.monotonic() - started

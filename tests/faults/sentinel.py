"""A Redis master, its replicas and three sentinels, each a process of the test's own on a free
loopback port, from the same binary as RedisProc (valkey-server or redis-server in sentinel mode).

The sentinels agree a master is down after `down_after_ms` of silence (2 of 3 must agree) and
promote the replica with the most data. `close()` thaws and kills every process, whatever the
test left running.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import redis

from livestate.server.store.embedded import free_ports

from .redisproc import RedisProc, ask, server_binary, until

MASTER = "mymaster"


class SentinelProc:
    def __init__(self, port: int, directory: Path, master_port: int, down_after_ms: int) -> None:
        self.port = port
        self.dir = directory
        self.conf = directory / f"sentinel-{self.port}.conf"
        self.conf.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {directory}",
                    f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2",
                    f"sentinel down-after-milliseconds {MASTER} {down_after_ms}",
                    f"sentinel failover-timeout {MASTER} 10000",
                    f"sentinel parallel-syncs {MASTER} 2",
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.dir / f"sentinel-{self.port}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [server_binary(), str(self.conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
            )

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=1.0)

    def master_port(self) -> int | None:
        """The master's port as this sentinel names it; None when it does not answer."""
        found = ask(self.client(), lambda client: client.sentinel_get_master_addr_by_name(MASTER))
        return int(found[1]) if isinstance(found, tuple) else None

    def sees(self, replicas: int, sentinels: int) -> bool:
        """True once this sentinel knows that many replicas and other sentinels."""
        master = ask(self.client(), lambda client: client.sentinel_master(MASTER))
        if not isinstance(master, dict):
            return False
        return (
            int(master.get("num-slaves", 0)) >= replicas
            and int(master.get("num-other-sentinels", 0)) >= sentinels
        )

    def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            self.proc = None


class SentinelGroup:
    def __init__(self, replicas: int = 2, sentinels: int = 3, down_after_ms: int = 1000) -> None:
        # Every port in one draw, so no two of them are the same port.
        ports = free_ports(1 + replicas + sentinels)
        self.master = RedisProc(port=ports[0])
        self.replicas = [
            RedisProc(port=port, extra_args=["--replicaof", "127.0.0.1", str(self.master.port)])
            for port in ports[1 : 1 + replicas]
        ]
        self.sentinels = [
            SentinelProc(port, self.master.dir, self.master.port, down_after_ms)
            for port in ports[1 + replicas :]
        ]

    @property
    def redis_procs(self) -> list[RedisProc]:
        return [self.master, *self.replicas]

    @property
    def hosts(self) -> str:
        """The sentinels as livestate's --sentinel takes them."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def start(self, timeout: float = 20.0) -> None:
        self.master.start()
        for replica in self.replicas:
            replica.start()
        deadline = time.monotonic() + timeout
        until(deadline, self._replicas_synced, "replicas never synced with the master")
        for sentinel in self.sentinels:
            sentinel.start()
        until(deadline, self._sentinels_agree, "sentinels never found each other and the replicas")

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            port = sentinel.master_port()
            if port is not None:
                return port
        return None

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> tuple[int, float]:
        """Polls until every sentinel names a master other than `old_port`; returns its port and
        the moment that was first seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = {sentinel.master_port() for sentinel in self.sentinels}
            if len(ports) == 1 and old_port not in ports:
                port = ports.pop()
                if port is not None:
                    return port, time.monotonic()
            time.sleep(0.02)
        raise AssertionError(f"no failover away from port {old_port} within {timeout}s")

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for proc in reversed(self.redis_procs):
            proc.close()

    def _replicas_synced(self) -> bool:
        client = self.master.client()
        try:
            info = client.info("replication")
        finally:
            client.close()
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return len(online) == len(self.replicas) and all(r.get("state") == "online" for r in online)

    def _sentinels_agree(self) -> bool:
        return all(s.sees(len(self.replicas), len(self.sentinels) - 1) for s in self.sentinels)

    def __enter__(self) -> SentinelGroup:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

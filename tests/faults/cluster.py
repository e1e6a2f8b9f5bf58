"""A Redis Cluster of the test's own: `masters` primaries (each with `replicas` replicas), every
one a process from the same binary as RedisProc on a free loopback port, the 16,384 slots split
evenly, joined with CLUSTER MEET and checked until every node agrees (cluster_state:ok and the
same slot map). `close()` thaws and kills them all, whatever the test left running.
"""

from __future__ import annotations

import time

import redis

from livestate.server.embedded import free_port

from .redisproc import RedisProc

SLOTS = 16384


def _cluster_args(proc_dir: str, bus_port: int, node_timeout_ms: int) -> list[str]:
    return [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        f"{proc_dir}/nodes.conf",
        "--cluster-node-timeout",
        str(node_timeout_ms),
        # The bus would be port + 10000, past 65535 for a high free port: a free one of its own.
        "--cluster-port",
        str(bus_port),
        # A replica may take over however long it was cut off from its master: tests freeze them.
        "--cluster-replica-validity-factor",
        "0",
    ]


def _info(client: redis.Redis) -> dict[str, str]:
    """CLUSTER INFO as a dict (a plain client gets it as text)."""
    raw = str(client.execute_command("CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in raw.splitlines() if ":" in line)


class LocalCluster:
    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        self.masters = [RedisProc() for _ in range(masters)]
        self.replicas = [RedisProc() for _ in range(masters * replicas)]
        self.bus_ports = {proc.port: free_port() for proc in self.procs}
        for proc in self.procs:
            proc.extra_args = _cluster_args(str(proc.dir), self.bus_ports[proc.port], node_timeout_ms)

    @property
    def procs(self) -> list[RedisProc]:
        return [*self.masters, *self.replicas]

    @property
    def url(self) -> str:
        """A seed node's URL (any node would do)."""
        return self.masters[0].url

    def start(self, timeout: float = 30.0) -> None:
        for proc in self.procs:
            proc.start()
        per = SLOTS // len(self.masters)
        for i, proc in enumerate(self.masters):
            last = SLOTS - 1 if i == len(self.masters) - 1 else (i + 1) * per - 1
            self._command(proc, "CLUSTER", "ADDSLOTSRANGE", i * per, last)
        for proc in self.procs[1:]:
            first = self.procs[0].port
            self._command(proc, "CLUSTER", "MEET", "127.0.0.1", first, self.bus_ports[first])
        deadline = time.monotonic() + timeout
        self._until(deadline, lambda: all(self._knows_all(p) for p in self.procs), "nodes never met")
        for i, replica in enumerate(self.replicas):
            master = self.masters[i % len(self.masters)]
            master_id = self._command(master, "CLUSTER", "MYID")
            self._command(replica, "CLUSTER", "REPLICATE", master_id)
        self._until(deadline, self.healthy, "the cluster never reached cluster_state:ok everywhere")
        self._until(deadline, self._replicas_linked, "replicas never synced with their primaries")

    def healthy(self) -> bool:
        """Every running node says cluster_state:ok and serves the same slot map."""
        maps = set()
        for proc in self.procs:
            if not proc.running or proc.frozen_now:
                continue
            client = proc.client(timeout=1.0)
            try:
                if _info(client).get("cluster_state") != "ok":
                    return False
                maps.add(str(sorted(str(s[:3]) for s in client.execute_command("CLUSTER", "SLOTS"))))
            except redis.exceptions.RedisError:
                return False
            finally:
                client.close()
        return len(maps) == 1

    def primary_port(self, key: str) -> int | None:
        """The port of the primary serving `key`'s slot, as the first live node says, once the
        cluster is ok there; None otherwise."""
        for proc in self.procs:
            if not proc.running or proc.frozen_now:
                continue
            client = proc.client(timeout=1.0)
            try:
                if _info(client).get("cluster_state") != "ok":
                    return None
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end):
                        return int(primary[1])
                return None
            except redis.exceptions.RedisError:
                continue
            finally:
                client.close()
        return None

    def replicas_of(self, port: int) -> list[RedisProc]:
        """The running replicas whose primary listens on `port`."""
        found = []
        for proc in self.replicas:
            if not proc.running or proc.frozen_now:
                continue
            client = proc.client(timeout=1.0)
            try:
                if int(client.info("replication").get("master_port", 0)) == port:
                    found.append(proc)
            except redis.exceptions.RedisError:
                continue
            finally:
                client.close()
        return found

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.close()

    def _replicas_linked(self) -> bool:
        for proc in self.replicas:
            client = proc.client(timeout=1.0)
            try:
                if client.info("replication").get("master_link_status") != "up":
                    return False
            except redis.exceptions.RedisError:
                return False
            finally:
                client.close()
        return True

    def _knows_all(self, proc: RedisProc) -> bool:
        client = proc.client(timeout=1.0)
        try:
            return int(_info(client).get("cluster_known_nodes", 0)) == len(self.procs)
        except redis.exceptions.RedisError:
            return False
        finally:
            client.close()

    @staticmethod
    def _command(proc: RedisProc, *args: object) -> str:
        client = proc.client(timeout=5.0)
        try:
            return str(client.execute_command(*args))
        finally:
            client.close()

    @staticmethod
    def _until(deadline: float, condition: object, message: str) -> None:
        assert callable(condition)
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(message)
            time.sleep(0.05)

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

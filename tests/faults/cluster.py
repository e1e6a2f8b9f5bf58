"""A Redis Cluster of the test's own: `masters` primaries (each with `replicas` replicas), every
one a process from the same binary as RedisProc on a free loopback port, the 16,384 slots split
evenly, joined with CLUSTER MEET and checked until every node agrees (cluster_state:ok and the
same slot map). `close()` thaws and kills them all, whatever the test left running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import redis

from livestate.server.store.embedded import free_ports

from .redisproc import RedisProc, ask, until

SLOTS = 16384
T = TypeVar("T")


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


def _ask(proc: RedisProc, question: Callable[[redis.Redis], T]) -> T | None:
    return ask(proc.client(timeout=1.0), question)


def _slot_map(client: redis.Redis) -> str | None:
    if _info(client).get("cluster_state") != "ok":
        return None
    return str(sorted(str(s[:3]) for s in client.execute_command("CLUSTER", "SLOTS")))


def _replication(field: str) -> Callable[[redis.Redis], str]:
    return lambda client: str(client.info("replication").get(field, ""))


class LocalCluster:
    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        count = masters * (1 + replicas)
        # Client and bus ports in one draw, so no two of them are the same port.
        ports = free_ports(2 * count)
        procs = [RedisProc(port=port) for port in ports[:count]]
        self.masters, self.replicas = procs[:masters], procs[masters:]
        self.bus_ports = {proc.port: bus for proc, bus in zip(procs, ports[count:], strict=True)}
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
        until(deadline, lambda: all(self._knows_all(p) for p in self.procs), "nodes never met")
        for i, replica in enumerate(self.replicas):
            master = self.masters[i % len(self.masters)]
            master_id = self._command(master, "CLUSTER", "MYID")
            self._command(replica, "CLUSTER", "REPLICATE", master_id)
        until(deadline, self.healthy, "the cluster never reached cluster_state:ok everywhere")
        until(deadline, self._replicas_linked, "replicas never synced with their primaries")

    def healthy(self) -> bool:
        """Every running node says cluster_state:ok and serves the same slot map."""
        maps = [_ask(proc, _slot_map) for proc in self._live(self.procs)]
        return bool(maps) and None not in maps and len(set(maps)) == 1

    def primary_port(self, key: str) -> int | None:
        """The port of the primary serving `key`'s slot, as the first live node that answers
        says, once the cluster is ok there; None otherwise."""

        def owner(client: redis.Redis) -> int | None:
            if _info(client).get("cluster_state") != "ok":
                return None
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
            return None

        return next((port for port in (_ask(p, owner) for p in self._live(self.procs)) if port), None)

    def replicas_of(self, port: int) -> list[RedisProc]:
        """The running replicas whose primary listens on `port`."""
        return [p for p in self._live(self.replicas) if _ask(p, _replication("master_port")) == str(port)]

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.close()

    @staticmethod
    def _live(procs: list[RedisProc]) -> list[RedisProc]:
        return [p for p in procs if p.running and not p.frozen_now]

    def _replicas_linked(self) -> bool:
        return all(_ask(p, _replication("master_link_status")) == "up" for p in self.replicas)

    def _knows_all(self, proc: RedisProc) -> bool:
        return _ask(proc, lambda c: _info(c).get("cluster_known_nodes")) == str(len(self.procs))

    @staticmethod
    def _command(proc: RedisProc, *args: object) -> str:
        client = proc.client(timeout=5.0)
        try:
            return str(client.execute_command(*args))
        finally:
            client.close()

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

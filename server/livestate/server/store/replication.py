"""Writes answered only once a replica holds them (WAIT), for a Redis with failover.

Redis replicates asynchronously: a master can acknowledge a claim and be lost before any replica
has it, and the promoted replica would hand the same slot out again. With `ack_replicas` > 0
every write goes out with a WAIT on the same connection, and its answer is released only when
that many replicas acknowledged it; otherwise the caller gets NotReplicated (UNAVAILABLE). The
write may still survive (it is on the master, and maybe on a replica that answered late), which
is safe because every script is idempotent: a Match retried with its job_id returns the same
lease, a Release or Fail answers as the first did. What is given out was replicated first.

Sentinel promotes the replica with the most data, so a write one replica acknowledged survives
the loss of the master unless that replica is lost with it; `ack_replicas` is how many losses
at once a deployment covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.client
import redis.cluster
import redis.exceptions

from livestate.server.core.errors import NotReplicated

# Commands livestate sends that write nothing: no WAIT after them.
READS = frozenset(
    {
        "GET",
        "MGET",
        "HGET",
        "HMGET",
        "HGETALL",
        "HLEN",
        "EXISTS",
        "TTL",
        "PTTL",
        "SMEMBERS",
        "SISMEMBER",
        "SCARD",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "ZRANGEBYLEX",
        "ZREVRANGE",
        "ZSCORE",
        "ZCARD",
        "ZCOUNT",
        "ZRANK",
        "XRANGE",
        "XREVRANGE",
        "XREAD",
        "XLEN",
        "XINFO",
        "SCAN",
        "INFO",
        "PING",
        "TIME",
        "SCRIPT",
        "CLIENT",
        "MEMORY",
        "ROLE",
        "WAIT",
        "PUBLISH",  # not replicated as data; a wake-up only
    }
)


def writes(args: tuple[Any, ...]) -> bool:
    # redis-py names some commands with their subcommand ("SCRIPT LOAD", "CLIENT SETNAME").
    return str(args[0]).split(" ", 1)[0].upper() not in READS


def wait_command(replicas: int, timeout_ms: int) -> tuple[str, int, int]:
    return ("WAIT", replicas, timeout_ms)


def withheld(replies: list[Any], acked: object, replicas: int, timeout_ms: int) -> list[Any]:
    """The replies of writes that WAIT answered `acked` for: as they are when enough replicas
    acknowledged, else NotReplicated in place of each success (an error reply already says its
    call changed nothing, and stays)."""
    count = acked if isinstance(acked, int) else 0
    if count >= replicas:
        return replies
    short = NotReplicated(replicas, count, timeout_ms)
    return [reply if isinstance(reply, Exception) else short for reply in replies]


def _raise_first(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


class ReplicatedPipeline(redis.client.Pipeline):
    ack_replicas = 0
    ack_timeout_ms = 0

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        if not self.ack_replicas or not any(writes(c[0]) for c in self.command_stack):
            return list(super().execute(raise_on_error))
        self.execute_command(*wait_command(self.ack_replicas, self.ack_timeout_ms))
        *replies, acked = super().execute(raise_on_error=False)
        replies = withheld(replies, acked, self.ack_replicas, self.ack_timeout_ms)
        return _raise_first(replies) if raise_on_error else replies


class ReplicatedRedis(redis.Redis):
    """A client whose every write waits for `ack_replicas` replicas (0: a plain client)."""

    ack_replicas = 0
    ack_timeout_ms = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if not self.ack_replicas or not writes(args):
            return super().execute_command(*args, **options)
        pipe = self.pipeline(transaction=False)
        pipe.execute_command(*args, **options)
        return pipe.execute()[0]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> ReplicatedPipeline:
        pipe = ReplicatedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.ack_replicas = self.ack_replicas
        pipe.ack_timeout_ms = self.ack_timeout_ms
        return pipe


def first_key(args: Sequence[Any]) -> str:
    """The key a command is routed by: EVAL/EVALSHA's first key, else its first argument (TIME
    and the like have none; any primary answers them)."""
    if str(args[0]).upper() in ("EVAL", "EVALSHA"):
        return str(args[3]) if int(args[2]) > 0 else ""
    return str(args[1]) if len(args) > 1 else ""


def _run_acked(
    cluster: redis.cluster.RedisCluster,
    commands: list[tuple[tuple[Any, ...], dict[str, Any]]],
    replicas: int,
    timeout_ms: int,
) -> list[Any]:
    """Runs commands on a cluster, each on its slot's primary, one pipeline per primary ending
    with a WAIT on the same connection; a reply whose primary's replicas fell short becomes
    NotReplicated (errors stay). A slot that moved answers MOVED (the command did not run) and
    makes the client read the slot map again."""
    by_node: dict[str, list[int]] = {}
    nodes: dict[str, Any] = {}
    for i, (args, _) in enumerate(commands):
        node = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(first_key(args)))
        by_node.setdefault(node.name, []).append(i)
        nodes[node.name] = node
    results: list[Any] = [None] * len(commands)
    for name, indexes in by_node.items():
        pipe = cluster.get_redis_connection(nodes[name]).pipeline(transaction=False)
        for i in indexes:
            pipe.execute_command(*commands[i][0], **commands[i][1])
        wrote = any(writes(commands[i][0]) for i in indexes)
        if wrote:
            pipe.execute_command(*wait_command(replicas, timeout_ms))
        try:
            replies = list(pipe.execute(raise_on_error=False))
        except redis.exceptions.ConnectionError:
            cluster.nodes_manager.initialize()
            raise
        if wrote:
            *replies, acked = replies
            replies = withheld(replies, acked, replicas, timeout_ms)
        if any(isinstance(r, redis.exceptions.AskError) for r in replies):
            cluster.nodes_manager.initialize()
        for i, reply in zip(indexes, replies, strict=True):
            results[i] = reply
    return results


class ReplicatedClusterPipeline(redis.cluster.ClusterPipeline):
    ack_replicas = 0
    ack_timeout_ms = 0

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        queued = list(self._execution_strategy.command_queue)
        if not self.ack_replicas or not any(writes(c.args) for c in queued):
            return list(super().execute(raise_on_error))
        try:
            replies = _run_acked(
                self, [(c.args, c.options) for c in queued], self.ack_replicas, self.ack_timeout_ms
            )
        finally:
            self.reset()
        return _raise_first(replies) if raise_on_error else replies


class ReplicatedCluster(redis.cluster.RedisCluster):
    """A cluster client whose every write waits for `ack_replicas` replicas of its primary."""

    ack_replicas = 0
    ack_timeout_ms = 0

    def close(self) -> None:
        # redis-py's close() leaves open the per-node pools it made from the URL (their node
        # clients do not own them), and their sockets would linger until garbage-collected.
        self.disconnect_connection_pools()
        super().close()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if not self.ack_replicas or not writes(args):
            return super().execute_command(*args, **options)
        return _raise_first(_run_acked(self, [(args, options)], self.ack_replicas, self.ack_timeout_ms))[0]

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> redis.cluster.ClusterPipeline:
        pipe = super().pipeline(transaction, shard_hint)
        # The same pipeline with an acknowledged execute(); its state is made by the base class.
        pipe.__class__ = ReplicatedClusterPipeline
        assert isinstance(pipe, ReplicatedClusterPipeline)
        pipe.ack_replicas = self.ack_replicas
        pipe.ack_timeout_ms = self.ack_timeout_ms
        return pipe

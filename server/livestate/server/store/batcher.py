"""Coalesces beats from many streams into Redis pipelines, on the event loop.

A round trip per beat caps a process at a few thousand beats/s; a pipeline of ~100 beat scripts
costs about the same as one. The batcher owns one Redis connection on the event loop (an asyncio
transport with a hiredis parser): the calls made during one turn of the loop leave in one write
at its end, and replies are matched to calls in order as they arrive. No batch waits for company
and no thread is woken for a beat: under light load a beat goes out alone at once, under heavy
load beats pile up during a turn and leave together. Locator TTL refreshes ride in the same write.

Never a resend after a failure: when a reply does not come (the connection broke, or Redis did
not answer within `redis_timeout`), every call sent or queued behind it fails at once, and the
connection is dropped (a late reply must never answer a later call) and made again for the next
call. The one exception is NOSCRIPT, which says the script did not run: that call goes again as
EVAL (which also caches the script).

Callers on other threads (unary Beat, tidy-ups deferred by the worker pool) hand their calls to
the loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import ssl
import time
from collections.abc import Sequence
from typing import Any, cast

import hiredis
import redis
import redis.cluster
import redis.exceptions
import redis.sentinel
from redis._parsers.base import BaseParser

from livestate.server.core import metrics
from livestate.server.core.errors import Unavailable
from livestate.server.store import replication
from livestate.server.store.scripts import Call, Command, R, ScriptCall, Scripts

_NOT_YET = object()  # hiredis: no whole reply buffered yet


@dataclasses.dataclass(slots=True)
class _Item:
    """One command on the wire: a script call or a plain command, and who waits for its reply."""

    call: Call | None = None
    command: Command | None = None
    future: asyncio.Future[Any] | None = None  # None: nobody waits (a touch, a deferred tidy-up)
    as_eval: bool = False  # sent again after NOSCRIPT: with its source
    # With ack_replicas: the WAIT that ends this item's batch, which holds its reply until the
    # replicas acknowledged it; on that WAIT itself, the replies it holds.
    gate: _Item | None = None
    held: list[tuple[_Item, Any]] | None = None

    def packed(self, scripts: Scripts) -> bytes:
        if self.call is None:
            assert self.command is not None
            return _pack(self.command)
        name = self.call.name
        head = ("EVAL", scripts.sources[name]) if self.as_eval else ("EVALSHA", scripts.sha(name))
        return _pack((*head, *self.call.wire))


class BeatBatcher:
    def __init__(self, client: redis.Redis, scripts: Scripts, *, timeout: float) -> None:
        # Read at every connect: the client's pool names the Redis served from now (fallback.py).
        self._client = client
        # On a Redis Cluster each call goes to the primary of its first key's slot: one lane (a
        # queue and a connection) per primary, each batching on its own.
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        # Every batch ends with a WAIT for this many replicas (replication.py); 0: none.
        self._ack = int(getattr(client, "ack_replicas", 0))
        self._ack_timeout_ms = int(getattr(client, "ack_timeout_ms", 0))
        self._scripts = scripts
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lanes: dict[str, _Lane] = {}
        self._flush_due = False
        self._refreshing = False
        self.batches = 0
        self.calls = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def stop(self) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(5)

    async def _close(self) -> None:
        for lane in self._lanes.values():
            lane.close(redis.exceptions.ConnectionError("livestate is stopping"))

    def call(
        self, call: ScriptCall[R], *, timeout: float, touch_key: str | None = None, touch_ttl_ms: int = 0
    ) -> R:
        """`call_async` for a blocking caller on another thread: raises what the call raised, or
        Unavailable when no answer came within `timeout` seconds."""
        assert self._loop is not None, "the batcher has not started"
        waiting = asyncio.run_coroutine_threadsafe(
            self.call_async(call, touch_key=touch_key, touch_ttl_ms=touch_ttl_ms), self._loop
        )
        try:
            return waiting.result(timeout)  # decoded by call_async
        except concurrent.futures.TimeoutError:
            waiting.cancel()
            raise Unavailable("redis did not answer within the call's deadline") from None

    async def call_async(
        self, call: ScriptCall[R], *, touch_key: str | None = None, touch_ttl_ms: int = 0
    ) -> R:
        """Runs one script call in this turn's batch (with a PEXPIRE of `touch_key`, if given).
        No timer of its own: every batch has one, and a batch that fails takes what is behind it
        along."""
        assert self._loop is not None, "the batcher has not started"
        future = self._loop.create_future()
        self._queue(_Item(call, future=future))
        if touch_key is not None:
            self._queue(_Item(command=("PEXPIRE", touch_key, touch_ttl_ms)))
        return call.decode(await future)

    async def pipeline(
        self, calls: Sequence[ScriptCall[R]], commands: Sequence[Command]
    ) -> tuple[list[R], list[Any]]:
        """Script calls and plain commands in this turn's batch, in that order; the calls' decoded
        replies and the commands' raw ones (a hash is a flat list), or the first error among them."""
        assert self._loop is not None, "the batcher has not started"
        call_replies = [self._loop.create_future() for _ in calls]
        command_replies = [self._loop.create_future() for _ in commands]
        for call, future in zip(calls, call_replies, strict=True):
            self._queue(_Item(call, future=future))
        for command, future in zip(commands, command_replies, strict=True):
            self._queue(_Item(command=command, future=future))
        replies = await asyncio.gather(*call_replies, *command_replies)
        decoded = [call.decode(reply) for call, reply in zip(calls, replies, strict=False)]
        return decoded, replies[len(calls) :]

    def defer(self, *, call: Call | None = None, command: Command | None = None) -> None:
        """Sends a tidy-up nobody waits for with the next batch (from any thread). Only for what a
        sweep or the next reader would redo if it were lost: a failed batch drops it."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._queue, _Item(call, command))

    def reconnect(self) -> None:
        """Drops the connections (from any thread): the next call connects to the Redis the
        client's pool names now. What was in flight fails UNAVAILABLE; nothing is resent."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._drop, "switched to another redis")

    def _drop(self, why: str) -> None:
        for lane in self._lanes.values():
            lane.drop(redis.exceptions.ConnectionError(why))

    def _queue(self, item: _Item) -> None:
        try:
            lane = self._lane_for(item)
        except redis.exceptions.RedisError as exc:  # a cluster slot nobody serves right now
            _fail([item], redis.exceptions.ConnectionError(f"no redis serves the key: {exc}"))
            self.refresh_slots()
            return
        lane.queued.append(item)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _lane_for(self, item: _Item) -> _Lane:
        name = ""
        if self._cluster:
            key = item.call.keys[0] if item.call is not None else replication.first_key(item.command or ("",))
            cluster = cast(redis.cluster.RedisCluster, self._client)
            name = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key)).name
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(self, name)
        return lane

    def _flush(self) -> None:
        self._flush_due = False
        for lane in self._lanes.values():
            lane.flush()

    def refresh_slots(self) -> None:
        """A slot moved (MOVED, ASK) or has no primary: read the cluster's slot map again, off
        the loop, once at a time."""
        if not self._cluster or self._refreshing or self._loop is None:
            return
        self._refreshing = True
        cluster = cast(redis.cluster.RedisCluster, self._client)

        def done(_: object) -> None:
            self._refreshing = False

        self._loop.run_in_executor(None, cluster.nodes_manager.initialize).add_done_callback(done)

    def _address(self, lane: str, pool: redis.ConnectionPool | None) -> tuple[dict[str, Any], Any]:
        """Connection options for a lane, and what to ask for the address when it must be looked
        up (a sentinel pool), else None."""
        if self._cluster:
            cluster = cast(redis.cluster.RedisCluster, self._client)
            host, _, port = lane.rpartition(":")
            kw = dict(cluster.nodes_manager.connection_kwargs)
            kw.update(host=host, port=int(port))
            return kw, None
        assert pool is not None
        kw = dict(pool.connection_kwargs)
        lookup = pool.get_master_address if isinstance(pool, redis.sentinel.SentinelConnectionPool) else None
        return kw, lookup

    async def _connect(self, lane: _Lane) -> None:
        assert self._loop is not None
        pool = None if self._cluster else self._client.connection_pool
        kw, lookup = self._address(lane.name, pool)
        wire = _Wire(lane, self._scripts, self._timeout)
        try:
            async with asyncio.timeout(self._timeout):
                if lookup is not None:
                    # The master may have moved since the last connection; asking the sentinels
                    # blocks, so it runs off the loop.
                    kw["host"], kw["port"] = await self._loop.run_in_executor(None, lookup)
                if pool is not None and pool.connection_class is redis.UnixDomainSocketConnection:
                    await self._loop.create_unix_connection(lambda: wire, kw["path"])
                else:
                    tls = kw.get("ssl") or (
                        pool is not None and issubclass(pool.connection_class, redis.SSLConnection)
                    )
                    await self._loop.create_connection(
                        lambda: wire, kw["host"], kw["port"], ssl=_ssl_context(kw) if tls else None
                    )
                await wire.handshake(kw)
        except Exception as exc:  # Redis is down, frozen or refuses us: what waits fails now
            wire.drop(redis.exceptions.ConnectionError(f"cannot connect to redis: {exc!r}"))
            lane.fail_queued(redis.exceptions.ConnectionError(f"cannot connect to redis: {exc!r}"))
            self.refresh_slots()
        else:
            lane.connected(wire)
        finally:
            lane.connecting = None


class _Lane:
    """The calls bound for one Redis (one primary of a cluster): their queue, the connection,
    and the WAIT in flight on it."""

    def __init__(self, batcher: BeatBatcher, name: str) -> None:
        self.batcher = batcher
        self.name = name
        self.queued: list[_Item] = []
        self.wire: _Wire | None = None
        self.connecting: asyncio.Task[None] | None = None
        # A WAIT holds the connection until it is answered, so a batch sent behind it would spend
        # its deadline waiting in Redis; one WAIT in flight at a time, and what queues meanwhile
        # leaves together behind it (one WAIT for all of it).
        self.gate_in_flight = False

    def flush(self) -> None:
        b = self.batcher
        if not self.queued:
            return
        if self.wire is None or self.wire.closed:
            if self.connecting is None:
                assert b._loop is not None
                self.connecting = b._loop.create_task(b._connect(self))
            return
        if self.gate_in_flight:
            return
        items, self.queued = self.queued, []
        if b._ack:
            gate = _Item(command=replication.wait_command(b._ack, b._ack_timeout_ms), held=[])
            for item in items:
                item.gate = gate
            items.append(gate)
            self.gate_in_flight = True
        self.wire.send(items)
        b.batches += 1
        b.calls += len(items)

    def connected(self, wire: _Wire) -> None:
        self.wire = wire
        self.gate_in_flight = False
        self.flush()

    def fail_queued(self, error: Exception) -> None:
        items, self.queued = self.queued, []
        _fail(items, error)

    def drop(self, error: Exception) -> None:
        if self.wire is not None and not self.wire.closed:
            self.wire.drop(error)

    def close(self, error: Exception) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
        self.fail_queued(error)
        self.drop(error)

    def gate_answered(self) -> None:
        self.gate_in_flight = False
        if self.queued:
            self.batcher._schedule_flush()

    def resend(self, item: _Item) -> None:
        """NOSCRIPT: the script did not run. Once more, with its source."""
        item.as_eval = True
        item.gate = None
        self.queued.append(item)
        self.batcher._schedule_flush()


class _Wire(asyncio.Protocol):
    """One connection: replies come back in the order commands went out."""

    def __init__(self, lane: _Lane, scripts: Scripts, timeout: float) -> None:
        self._lane = lane
        self._scripts = scripts
        self._timeout = timeout
        self._reader = hiredis.Reader(
            replyError=BaseParser.parse_error, encoding="utf-8", notEnoughData=_NOT_YET
        )
        self._transport: asyncio.Transport | None = None
        self._waiting: collections.deque[_Item] = collections.deque()
        # Per write: how many replies must have come when it is answered, and its deadline.
        # Per batch sent: the count sent up to its end, its deadline, when it left (metrics).
        self._deadlines: collections.deque[tuple[int, asyncio.TimerHandle, float]] = collections.deque()
        self._sent = 0
        self._answered = 0
        self.closed = False

    async def handshake(self, kw: dict[str, Any]) -> None:
        """AUTH, SELECT and a client name, as redis-py's connections do, answered before use."""
        commands: list[Command] = []
        if kw.get("password"):
            user = kw.get("username")
            commands.append(("AUTH", user, kw["password"]) if user else ("AUTH", kw["password"]))
        if kw.get("db"):
            commands.append(("SELECT", kw["db"]))
        if kw.get("client_name"):
            commands.append(("CLIENT", "SETNAME", kw["client_name"]))
        if not commands:
            return
        loop = asyncio.get_running_loop()
        items = [_Item(command=c, future=loop.create_future()) for c in commands]
        self.send(items)
        for reply in await asyncio.gather(*(i.future for i in items if i.future is not None)):
            if isinstance(reply, Exception):
                raise reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def send(self, items: Sequence[_Item]) -> None:
        assert self._transport is not None
        self._transport.write(b"".join(item.packed(self._scripts) for item in items))
        self._waiting.extend(items)
        self._sent += len(items)
        loop = asyncio.get_running_loop()
        deadline = loop.call_later(self._timeout, self._expired)
        self._deadlines.append((self._sent, deadline, time.perf_counter()))
        metrics.BEAT_BATCH.observe(len(items))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not _NOT_YET:
            item = self._waiting.popleft()
            self._answered += 1
            while self._deadlines and self._deadlines[0][0] <= self._answered:
                _, deadline, sent = self._deadlines.popleft()
                deadline.cancel()
                metrics.REDIS_SECONDS.labels("loop").observe(time.perf_counter() - sent)
            if isinstance(reply, redis.exceptions.NoScriptError) and item.call is not None:
                self._lane.resend(item)
            elif item.gate is not None and item.gate.held is not None:
                item.gate.held.append((item, reply))
            elif item.held is not None:
                _release(item, reply)
                self._lane.gate_answered()
            else:
                _answer(item, reply)
            if isinstance(reply, redis.exceptions.AskError):  # MOVED or ASK: it did not run here
                self._lane.batcher.refresh_slots()
            if isinstance(reply, redis.exceptions.ReadOnlyError):
                # A demoted master (a failover happened): connect again, to the new one.
                self.drop(redis.exceptions.ConnectionError("redis master is now a replica"))
                return

    def _expired(self) -> None:
        self.drop(redis.exceptions.TimeoutError("redis did not answer a batch within redis_timeout"))
        self._lane.fail_queued(redis.exceptions.TimeoutError("redis did not answer the batch ahead"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.drop(redis.exceptions.ConnectionError(f"connection to redis lost: {exc or 'closed by redis'}"))

    def drop(self, error: Exception) -> None:
        """Fails every call still waiting for a reply and closes the connection for good."""
        self.closed = True
        if self._waiting:
            metrics.REDIS_ERRORS.labels("loop", type(error).__name__).inc()
        for _, deadline, _ in self._deadlines:
            deadline.cancel()
        self._deadlines.clear()
        waiting, self._waiting = list(self._waiting), collections.deque()
        _fail(waiting, error)
        if self._transport is not None:
            self._transport.abort()


def _pack(command: Command) -> bytes:
    # hiredis's stubs type the argument as a one-element tuple; any length is packed.
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


def _ssl_context(kw: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"))
    if kw.get("ssl_certfile"):
        context.load_cert_chain(kw["ssl_certfile"], kw.get("ssl_keyfile"))
    context.check_hostname = bool(kw.get("ssl_check_hostname"))
    if kw.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
        context.verify_mode = ssl.CERT_NONE
    return context


def _answer(item: _Item, reply: Any) -> None:
    if item.future is not None and not item.future.done():
        if isinstance(reply, Exception):
            item.future.set_exception(reply)
        else:
            item.future.set_result(reply)


def _release(gate: _Item, acked: Any) -> None:
    """WAIT answered: the replies it held go out (see replication.withheld)."""
    assert gate.command is not None and gate.held is not None
    _, replicas, timeout_ms = gate.command
    items = [item for item, _ in gate.held]
    replies = replication.withheld([reply for _, reply in gate.held], acked, int(replicas), int(timeout_ms))
    for item, reply in zip(items, replies, strict=True):
        _answer(item, reply)


def _fail(items: Sequence[_Item], error: Exception) -> None:
    for item in items:
        if item.held:
            _fail([held for held, _ in item.held], error)
        if item.future is not None and not item.future.done():
            item.future.set_exception(error)

"""Coalesces beats from many streams into Redis pipelines.

A round trip per beat caps a process at a few thousand beats/s; a pipeline of ~100 beat scripts
costs about the same as one. Callers (stream and Beat handlers, one thread each) submit a call
and wait for its result; a few writer threads each take whatever is queued (up to the batch size),
send it as one pipeline and hand back the per-call results. No batch waits for company: under
light load a beat goes out alone at once, under heavy load beats pile up while the previous
pipeline is in flight and leave together. Locator TTL refreshes ride in the same pipeline.

Beats from the event loop (Heartbeat streams, see edge.py) wait on an asyncio future instead of
a thread; a batch wakes the loop once for all of its calls, not once per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import redis
import redis.connection
import redis.exceptions

from livestate.server.errors import Unavailable
from livestate.server.scripts import Call, Command, Scripts

log = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class _Pending:
    call: Call | None
    touch_key: str | None = None
    touch_ttl_ms: int = 0
    command: Command | None = None
    done: threading.Event | None = None
    future: asyncio.Future[Any] | None = None
    result: Any = None
    error: BaseException | None = None


class BeatBatcher:
    def __init__(self, client: redis.Redis, scripts: Scripts, *, batch_size: int, writers: int) -> None:
        self._client = client
        self._scripts = scripts
        self._batch_size = batch_size
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"beat-writer-{i}", daemon=True) for i in range(writers)
        ]
        self.batches = 0
        self.calls = 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def call(self, call: Call, *, timeout: float, touch_key: str | None = None, touch_ttl_ms: int = 0) -> Any:
        """Runs one script call in the next batch; raises what the call raised, or Unavailable
        when no answer came within `timeout` seconds."""
        pending = _Pending(call, touch_key, touch_ttl_ms, done=threading.Event())
        self._queue.put(pending)
        assert pending.done is not None
        if not pending.done.wait(timeout):
            raise Unavailable("redis did not answer within the call's deadline")
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def call_async(self, call: Call, *, touch_key: str | None = None, touch_ttl_ms: int = 0) -> Any:
        """`call` for a coroutine on the running loop: waits without holding a thread. No timer
        of its own (one per beat costs more than the beat's script): every batch ends within
        the Redis timeout, and a batch that fails takes what queued behind it along."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put(_Pending(call, touch_key, touch_ttl_ms, future=future))
        return await future

    def defer(self, *, call: Call | None = None, command: Command | None = None) -> None:
        """Sends a tidy-up no caller waits for with the next batch (a script call or a plain
        command). Only for what a sweep or the next reader would redo if it were lost: a failed
        batch drops it."""
        self._queue.put(_Pending(call, command=command))

    def _run(self) -> None:
        # A connection of this writer's own: no pool checkout (and its poll) per batch.
        pool = self._client.connection_pool
        conn = pool.connection_class(**pool.connection_kwargs)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                failed = self._flush(conn, [first, *self._queued(self._batch_size - 1)])
                if failed is not None:
                    self._fail_queued(failed)
        finally:
            conn.disconnect()

    def _fail_queued(self, error: Exception) -> None:
        """Redis just failed a batch (lost or frozen): what waits behind it fails now, rather than
        a Redis timeout later per batch."""
        waiting = [p for p in self._queued() if p.call is not None]
        self._answer(waiting, [error] * len(waiting))

    def _queued(self, limit: int | None = None) -> list[_Pending]:
        """What is queued now (at most `limit`), without waiting."""
        taken: list[_Pending] = []
        while limit is None or len(taken) < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # leave the stop signal for this thread's next turn
                break
            taken.append(item)
        return taken

    def _flush(
        self, conn: redis.connection.AbstractConnection, batch: Sequence[_Pending]
    ) -> Exception | None:
        """Sends the batch; the error that failed all of it, if one did."""
        calls = [p for p in batch if p.call is not None]
        plain: list[Command] = [("PEXPIRE", p.touch_key, p.touch_ttl_ms) for p in batch if p.touch_key]
        plain += [p.command for p in batch if p.command is not None]
        failed: Exception | None = None
        try:
            _drop_if_stale(conn)
            results: Sequence[Any] = self._scripts.call_many_on(
                conn, [p.call for p in calls if p.call is not None], also=plain
            )
        except Exception as exc:  # the connection failed (lost, timed out): the whole batch did
            conn.disconnect()
            failed, results = exc, [exc] * len(calls)
        else:
            self.batches += 1
            self.calls += len(calls)
        self._answer(calls, results)
        return failed

    @staticmethod
    def _answer(calls: Sequence[_Pending], results: Sequence[Any]) -> None:
        on_loops: defaultdict[asyncio.AbstractEventLoop, list[_Pending]] = defaultdict(list)
        for p, result in zip(calls, results, strict=True):
            if isinstance(result, Exception):
                p.error = result
            else:
                p.result = result
            if p.done is not None:
                p.done.set()
            elif p.future is not None:
                on_loops[p.future.get_loop()].append(p)
        for loop, answered in on_loops.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: no one waits any more
                loop.call_soon_threadsafe(_resolve, answered)


def _drop_if_stale(conn: redis.connection.AbstractConnection) -> None:
    """A connection Redis closed (a restart) or left with unread bytes is never written to:
    reconnecting is safe, resending is not."""
    try:
        if conn.can_read(0):
            conn.disconnect()
    except redis.exceptions.ConnectionError:
        conn.disconnect()


def _resolve(answered: Sequence[_Pending]) -> None:
    for p in answered:
        future = p.future
        if future is None or future.done():  # its caller was cancelled meanwhile
            continue
        if p.error is not None:
            future.set_exception(p.error)
        else:
            future.set_result(p.result)

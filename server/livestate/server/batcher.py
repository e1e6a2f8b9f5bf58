"""Coalesces beats from many streams into Redis pipelines.

A round trip per beat caps a process at a few thousand beats/s; a pipeline of ~100 beat scripts
costs about the same as one. Callers (stream and Beat handlers, one thread each) submit a call
and wait for its result; a few writer threads each take whatever is queued (up to the batch size),
send it as one pipeline and hand back the per-call results. No batch waits for company: under
light load a beat goes out alone at once, under heavy load beats pile up while the previous
pipeline is in flight and leave together.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any

import redis

from livestate.server.errors import Unavailable
from livestate.server.scripts import Call, Scripts

log = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class _Pending:
    call: Call
    touch_key: str | None
    touch_ttl_ms: int
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
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
        pending = _Pending(call, touch_key, touch_ttl_ms)
        self._queue.put(pending)
        if not pending.done.wait(timeout):
            raise Unavailable("redis did not answer within the call's deadline")
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # leave the stop signal for this thread's next turn
                    break
                batch.append(item)
            self._flush(batch)

    def _flush(self, batch: Sequence[_Pending]) -> None:
        try:
            results = self._scripts.call_many([p.call for p in batch])
            touches = [p for p in batch if p.touch_key is not None]
            if touches:
                pipe = self._client.pipeline(transaction=False)
                for p in touches:
                    pipe.pexpire(p.touch_key, p.touch_ttl_ms)  # type: ignore[arg-type]
                pipe.execute(raise_on_error=False)
        except Exception as exc:  # the whole pipeline failed (connection lost, timeout)
            for p in batch:
                p.error = exc
                p.done.set()
            return
        self.batches += 1
        self.calls += len(batch)
        for p, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                p.error = result
            else:
                p.result = result
            p.done.set()

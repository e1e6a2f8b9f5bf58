"""Wake-ups for calls that wait on an assignment (Match with wait, Assignments streams).

Assignments are announced on one Redis pub/sub channel so that every server process hears of
them, whichever process's script made them. Pub/sub is fire-and-forget, so it only wakes
waiters early: each waiter also re-reads the durable records (job, scheduler) at least every
POLL seconds, and nothing is lost when a message is.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Iterator

import redis

log = logging.getLogger(__name__)

# A waiting call re-reads its durable records at least this often, whatever pub/sub says.
POLL = 0.25


def job_topic(job_id: str) -> str:
    return "job:" + job_id


def scheduler_topic(scheduler_id: str) -> str:
    return "sched:" + scheduler_id


def message(job_id: str, scheduler_id: str) -> str:
    return f"{job_id}\n{scheduler_id}"


class Notifier:
    def __init__(self, client: redis.Redis, channel: str) -> None:
        self._client = client
        self.channel = channel
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = collections.defaultdict(set)
        self._stop = threading.Event()
        # Bumped to make the listener subscribe again, on the Redis the client names now.
        self._generation = 0
        self._thread = threading.Thread(target=self._listen, name="assignments-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @contextlib.contextmanager
    def watch(self, topic: str) -> Iterator[threading.Event]:
        """An Event set whenever `topic` is announced, while the block runs."""
        event = threading.Event()
        with self._lock:
            self._waiters[topic].add(event)
        try:
            yield event
        finally:
            with self._lock:
                self._waiters[topic].discard(event)
                if not self._waiters[topic]:
                    del self._waiters[topic]

    def reconnect(self) -> None:
        """Subscribe again through the client's current pool (after a switch of Redis); a frozen
        Redis would otherwise keep the old subscription waiting forever."""
        self._generation += 1

    def wake(self, job_id: str, scheduler_id: str) -> None:
        topics = [job_topic(job_id)] + ([scheduler_topic(scheduler_id)] if scheduler_id else [])
        with self._lock:
            events = [e for t in topics for e in self._waiters.get(t, ())]
        for event in events:
            event.set()

    def _listen(self) -> None:
        while not self._stop.is_set():
            generation = self._generation
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                while not self._stop.is_set() and generation == self._generation:
                    msg = pubsub.get_message(timeout=0.1)
                    if msg and msg.get("type") == "message":
                        job_id, _, scheduler_id = str(msg["data"]).partition("\n")
                        self.wake(job_id, scheduler_id)
            except redis.exceptions.RedisError as exc:
                log.debug("assignment listener reconnecting: %s", exc)
                self._stop.wait(0.5)
            finally:
                with contextlib.suppress(redis.exceptions.RedisError):
                    pubsub.close()

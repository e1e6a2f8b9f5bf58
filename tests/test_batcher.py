"""The beat batcher's own Redis connection on the event loop: one write per loop turn, replies in
order, NOSCRIPT run again with the source, and a failure fails what waits without resending it."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from livestate.server import Config
from livestate.server.api.edge import EventLoop
from livestate.server.core.errors import Unavailable
from livestate.server.store import calls
from livestate.server.store.batcher import BeatBatcher
from livestate.server.store.connection import connect
from livestate.server.store.embedded import EmbeddedRedis
from livestate.server.store.scripts import ScriptCall, Scripts

TIMEOUT = 0.5


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as embedded:
        yield embedded


def _batcher(url: str) -> tuple[BeatBatcher, redis.Redis, Scripts]:
    client = connect(url, Config(listen="127.0.0.1:0", redis_timeout=TIMEOUT))
    scripts = Scripts(client)
    scripts.load()
    batcher = BeatBatcher(client, scripts, timeout=TIMEOUT)
    batcher.start(EventLoop.shared().loop)
    return batcher, client, scripts


@pytest.fixture
def batcher(own_redis: EmbeddedRedis) -> Iterator[BeatBatcher]:
    made, client, _ = _batcher(own_redis.url)
    yield made
    made.stop()
    client.close()


def _del_if_equal(key: str, value: str) -> ScriptCall[bool]:
    return calls.del_if_equal(key, value)


def _on_loop(*calls: Any) -> list[Any]:
    """Runs coroutines together on the batcher's loop; each result or the exception it raised."""

    async def together() -> list[Any]:
        return list(await asyncio.gather(*calls, return_exceptions=True))

    return EventLoop.shared().run(together(), timeout=10)


def test_calls_made_in_one_loop_turn_leave_together_and_each_gets_its_reply(
    batcher: BeatBatcher, own_redis: EmbeddedRedis
) -> None:
    observer = redis.Redis.from_url(own_redis.url, decode_responses=True)
    for i in range(50):
        observer.set(f"k{i}", "v" if i % 2 else "other")
    before = batcher.batches
    replies = _on_loop(*(batcher.call_async(_del_if_equal(f"k{i}", "v")) for i in range(50)))
    assert replies == [i % 2 for i in range(50)]
    assert batcher.batches - before == 1
    assert observer.exists(*(f"k{i}" for i in range(50))) == 25
    observer.close()


def test_a_touch_rides_with_its_call(batcher: BeatBatcher, own_redis: EmbeddedRedis) -> None:
    observer = redis.Redis.from_url(own_redis.url, decode_responses=True)
    observer.set("loc", "p")
    [reply] = _on_loop(batcher.call_async(_del_if_equal("x", "y"), touch_key="loc", touch_ttl_ms=60_000))
    assert reply == 0
    assert 0 < observer.pttl("loc") <= 60_000
    observer.close()


def test_a_script_redis_forgot_runs_again_with_its_source(
    batcher: BeatBatcher, own_redis: EmbeddedRedis
) -> None:
    observer = redis.Redis.from_url(own_redis.url, decode_responses=True)
    observer.set("k", "v")
    observer.script_flush()
    [reply] = _on_loop(batcher.call_async(_del_if_equal("k", "v")))
    assert reply == 1
    assert not observer.exists("k")
    observer.close()


def test_a_script_error_answers_its_own_call_only(batcher: BeatBatcher, own_redis: EmbeddedRedis) -> None:
    observer = redis.Redis.from_url(own_redis.url, decode_responses=True)
    observer.hset("h", "f", "v")  # a hash where del_if_equal expects a string: WRONGTYPE inside
    wrong, right = _on_loop(
        batcher.call_async(_del_if_equal("h", "v")), batcher.call_async(_del_if_equal("none", "v"))
    )
    assert isinstance(wrong, redis.exceptions.ResponseError)
    assert right == 0
    observer.close()


def test_a_frozen_redis_fails_what_waits_and_a_thawed_one_answers_again(
    batcher: BeatBatcher, own_redis: EmbeddedRedis
) -> None:
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    try:
        replies = _on_loop(*(batcher.call_async(_del_if_equal(f"k{i}", "v")) for i in range(5)))
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    assert all(isinstance(r, redis.exceptions.TimeoutError) for r in replies), replies
    assert _on_loop(batcher.call_async(_del_if_equal("k", "v"))) == [0]


def test_a_restarted_redis_is_connected_to_again(batcher: BeatBatcher, own_redis: EmbeddedRedis) -> None:
    assert _on_loop(batcher.call_async(_del_if_equal("k", "v"))) == [0]
    own_redis.restart()  # the batcher's connection is dead, and it does not know yet
    # A write that meets the dead connection fails (ConnectionError, never sent again); the
    # next call connects afresh (and the empty script cache answers NOSCRIPT: sent as EVAL).
    [first] = _on_loop(batcher.call_async(_del_if_equal("k", "v")))
    assert first == 0 or isinstance(first, redis.exceptions.ConnectionError)
    assert _on_loop(batcher.call_async(_del_if_equal("k", "v"))) == [0]


def test_a_blocking_caller_gets_the_failure_or_unavailable_at_its_deadline(own_redis: EmbeddedRedis) -> None:
    made, client, _ = _batcher(own_redis.url)
    assert own_redis.proc is not None
    try:
        assert made.call(_del_if_equal("k", "v"), timeout=5) == 0
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(Unavailable):  # its deadline comes before the batch's
                made.call(_del_if_equal("k", "v"), timeout=TIMEOUT / 5)
            with pytest.raises(redis.exceptions.TimeoutError):  # the batch's comes first
                made.call(_del_if_equal("k", "v"), timeout=5)
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        own_redis.kill()
        with pytest.raises(redis.exceptions.ConnectionError):
            made.call(_del_if_equal("k", "v"), timeout=5)
    finally:
        made.stop()
        client.close()


def test_the_batcher_selects_the_urls_database(own_redis: EmbeddedRedis) -> None:
    made, client, _ = _batcher(own_redis.url + "/3")
    try:
        observer = redis.Redis.from_url(own_redis.url + "/3", decode_responses=True)
        observer.set("k", "v")
        assert made.call(_del_if_equal("k", "v"), timeout=5) == 1
        assert not observer.exists("k")
        observer.close()
    finally:
        made.stop()
        client.close()


def test_a_deferred_command_is_sent_with_the_next_batch(
    batcher: BeatBatcher, own_redis: EmbeddedRedis
) -> None:
    observer = redis.Redis.from_url(own_redis.url, decode_responses=True)
    observer.zadd("z", {"a": 1, "b": 2})
    batcher.defer(command=("ZREM", "z", "a"))
    _on_loop(batcher.call_async(_del_if_equal("k", "v")))  # after the deferred one, on one connection
    assert observer.zrange("z", 0, -1) == ["b"]
    observer.close()

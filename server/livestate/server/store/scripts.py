"""Lua scripts: loaded once from package data, called by SHA, batched in pipelines.

Every script is the shared helpers it uses (lua/lib/*.lua, chosen by prelude.py) followed by its
own file. Calls use EVALSHA; a NOSCRIPT answer (Redis restarted or
flushed its script cache) loads the sources again and repeats only the calls that did not run, so
a retry never runs a script twice.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar, get_args

import redis
import redis.cluster
import redis.connection
import redis.exceptions

from livestate.server.core import metrics
from livestate.server.store import prelude

ScriptName = Literal[
    "register",
    "beat",
    "deregister",
    "sweep",
    "forget",
    "epoch",
    "del_if_equal",
    "match",
    "renew",
    "release",
    "unwait",
    "settle",
    "setflag",
    "hold",
    "grant",
    "membership",
]
SCRIPT_NAMES: tuple[ScriptName, ...] = get_args(ScriptName)

Command = tuple[str | int | float, ...]
R = TypeVar("R")


@dataclasses.dataclass(frozen=True, slots=True)
class ScriptCall(Generic[R]):
    """One call of one script, built by its wrapper in calls.py: `decode` turns the raw reply
    into what the wrapper promises."""

    name: ScriptName
    keys: Sequence[str]
    args: Sequence[str | int | float]
    decode: Callable[[Any], R]

    @property
    def wire(self) -> tuple[str | int | float, ...]:
        """What follows EVALSHA <sha> or EVAL <source>."""
        return (len(self.keys), *self.keys, *self.args)


Call = ScriptCall[Any]


def read_lua(name: str) -> str:
    return (importlib.resources.files("livestate.server.store") / "lua" / f"{name}.lua").read_text("utf-8")


@functools.cache
def lib_helpers() -> tuple[prelude.Helper, ...]:
    return tuple(prelude.helpers([read_lua(f"lib/{name}") for name in prelude.LIB]))


def with_helpers(body: str) -> str:
    """A script's whole source: the helpers its body uses, then the body."""
    return prelude.prelude(lib_helpers(), body) + "\n" + body


class Scripts:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.sources: dict[ScriptName, str] = {name: with_helpers(read_lua(name)) for name in SCRIPT_NAMES}
        self._sha = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in self.sources.items()}
        self._load_lock = threading.Lock()

    def load(self) -> None:
        with self._load_lock:
            if isinstance(self._client, redis.cluster.RedisCluster):
                # SCRIPT LOAD goes to every primary (a pipeline would need a key to route by).
                for src in self.sources.values():
                    self._client.script_load(src)
                return
            pipe = self._client.pipeline(transaction=False)
            for src in self.sources.values():
                pipe.script_load(src)
            pipe.execute()

    def sha(self, name: ScriptName) -> str:
        return self._sha[name]

    def call(self, call: ScriptCall[R]) -> R:
        try:
            with metrics.redis_timed("script"):
                return call.decode(
                    self._client.evalsha(self._sha[call.name], len(call.keys), *call.keys, *call.args)
                )
        except redis.exceptions.NoScriptError:
            self.load()
            with metrics.redis_timed("script"):
                return call.decode(
                    self._client.evalsha(self._sha[call.name], len(call.keys), *call.keys, *call.args)
                )

    def call_many(self, calls: Sequence[ScriptCall[R]]) -> list[R | Exception]:
        """Runs the calls in one pipeline; each result is a decoded reply or the exception it
        raised. After NOSCRIPT (those calls did not run), loads the sources and sends those again."""
        results = self._run(calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)]
        if missing:
            self.load()
            for i, result in zip(missing, self._run([calls[i] for i in missing]), strict=True):
                results[i] = result
        return [r if isinstance(r, Exception) else c.decode(r) for c, r in zip(calls, results, strict=True)]

    def run_all(self, calls: Sequence[ScriptCall[R]]) -> list[R]:
        """`call_many`, raising the first error."""
        results = self.call_many(calls)
        for r in results:
            if isinstance(r, Exception):
                raise r
        return results  # type: ignore[return-value]

    def add(self, pipe: redis.client.Pipeline, call: Call) -> None:
        """Queues one script call on a pipeline being built for `pipeline`; its reply there is
        raw: pass it to `call.decode`."""
        # As a raw command: redis-py's cluster pipeline refuses its evalsha method, though it
        # routes EVALSHA by its keys like any command.
        pipe.execute_command("EVALSHA", self._sha[call.name], *call.wire)

    def pipeline(self, build: Callable[[redis.client.Pipeline], None]) -> list[Any]:
        """Runs a pipeline of plain commands and at most one script call, built by `build`, and
        returns its replies, raising the first error. On NOSCRIPT the script did not run: the
        sources are loaded and the pipeline is built and run again, so its plain commands must be
        safe to repeat (reads, or writes of the same value)."""
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            build(pipe)
            with metrics.redis_timed("pipeline"):
                replies = list(pipe.execute(raise_on_error=False))
            errors = [r for r in replies if isinstance(r, Exception)]
            if attempt == 0 and any(isinstance(e, redis.exceptions.NoScriptError) for e in errors):
                self.load()
                continue
            if errors:
                raise errors[0]
            return replies
        raise AssertionError("unreachable")

    def _run(self, calls: Sequence[Call]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for call in calls:
            self.add(pipe, call)
        with metrics.redis_timed("pipeline"):
            return list(pipe.execute(raise_on_error=False))

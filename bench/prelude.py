"""What the shared Lua prelude costs: every livestate script is lib.lua (its helpers, defined as
local functions) followed by the script's own body, so each call defines every helper again
before its body runs. Measured as Redis's own CPU per EVALSHA (INFO commandstats), on a Redis of
its own: a trivial body alone, and the same body after lib.lua. The difference is what the
prelude adds to every script call; the report sets it beside a Match + Release pair's Redis CPU.
"""

from __future__ import annotations

import importlib.resources
from typing import Any

import redis

from livestate.server.store.embedded import EmbeddedRedis

BODY = "return 1"


def _usec_per_call(client: redis.Redis, sha: str, calls: int) -> float:
    client.config_resetstat()
    pipe = client.pipeline(transaction=False)
    for i in range(calls):
        pipe.evalsha(sha, 0)
        if i % 200 == 199:
            pipe.execute()
    pipe.execute()
    stats: dict[str, Any] = client.info("commandstats")
    return float(stats["cmdstat_evalsha"]["usec_per_call"])


def run(calls: int = 20_000, rounds: int = 3) -> dict[str, float]:
    lib = (importlib.resources.files("livestate.server.store") / "lua" / "lib.lua").read_text("utf-8")
    with EmbeddedRedis() as embedded:
        client = redis.Redis.from_url(embedded.url)
        try:
            bare = client.script_load(BODY)
            prelude = client.script_load(lib + "\n" + BODY)
            # Alternating rounds, best of each: the least the machine's noise leaves.
            bare_us = min(_usec_per_call(client, bare, calls) for _ in range(rounds))
            with_lib_us = min(_usec_per_call(client, prelude, calls) for _ in range(rounds))
        finally:
            client.close()
    return {
        "calls": calls,
        "bare_us": bare_us,
        "with_lib_us": with_lib_us,
        "prelude_us": max(0.0, with_lib_us - bare_us),
        "lib_lines": len(lib.splitlines()),
    }

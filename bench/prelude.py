"""What the shared Lua helpers cost: each script is loaded with the helpers it uses (prelude.py),
defined again on every call before its body runs. Measured as Redis's own CPU per EVALSHA (INFO
commandstats), on a Redis of its own: a trivial body alone, the same body after each script's
helpers, and after every helper (what each call paid when every script carried them all). The
report sets the helpers of a Match + Release pair's script calls beside the pair's Redis CPU.
"""

from __future__ import annotations

from typing import Any

import redis

from livestate.server.store import prelude as helpers_of
from livestate.server.store.embedded import EmbeddedRedis
from livestate.server.store.scripts import SCRIPT_NAMES, lib_helpers, read_lua

BODY = "return 1"
# The script calls of one Match + Release pair: the claim, settling it on the job, the release,
# and the deferred clear of the job's lease (see the report).
PAIR = ("match", "settle", "release", "del_if_equal")


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


def run(calls: int = 20_000, rounds: int = 3) -> dict[str, Any]:
    lib = lib_helpers()
    every = "".join(h.text for h in lib)
    own: dict[str, str] = {name: helpers_of.prelude(lib, read_lua(name)) for name in SCRIPT_NAMES}
    with EmbeddedRedis() as embedded:
        client = redis.Redis.from_url(embedded.url)
        try:

            def cost(prefix: str) -> float:
                sha = client.script_load(prefix + "\n" + BODY)
                # Best of several rounds: the least the machine's noise leaves.
                return min(_usec_per_call(client, sha, calls) for _ in range(rounds))

            bare_us = cost("")
            all_us = cost(every)
            scripts = {
                name: {
                    "helpers": len([h for h in lib if h.text in own[name]]),
                    "us": max(0.0, cost(text) - bare_us) if text else 0.0,
                }
                for name, text in own.items()
            }
        finally:
            client.close()
    return {
        "calls": calls,
        "bare_us": bare_us,
        "every_helper_us": max(0.0, all_us - bare_us),
        "helpers_total": len(lib),
        "scripts": scripts,
        "pair_scripts": list(PAIR),
        "pair_helpers_us": sum(scripts[name]["us"] for name in PAIR),
    }

"""Where the server's CPU goes under a load: py-spy samples of the server process, each charged
to the part of the stack that was running (the innermost Python frame, and what it stands for).

py-spy sees Python frames only (--native cannot be combined with --nonblocking, and pausing the
server for every sample would change what is measured), so C code is charged to the Python frame
that called it: time under asyncio's Handle._run is the grpc.aio Cython callbacks and the C they
call (completion queue, protobuf parsing); time under Thread.run is C running on a plain thread
(grpc core's pollers). Samples in a wait (epoll, a condition) are counted apart as idle.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# (part, test on the leaf frame "function (file:line)"), first match wins.
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("idle (epoll, waits)", ("(selectors.py", "Condition.wait", "Event.wait", "_worker (concurrent")),
    ("C under an event-loop callback (grpc.aio, protobuf)", ("Handle._run (asyncio/events.py",)),
    ("C on a plain thread (grpc core)", ("Thread.run (threading.py",)),
    ("redis-py and hiredis", ("(redis/",)),
    ("socket I/O (asyncio transports, to Redis)", ("_SelectorSocketTransport.",)),
    ("livestate", ("(server/", "(livestate/")),
    ("asyncio", ("(asyncio/",)),
    ("grpc Python", ("(grpc/",)),
    ("protobuf Python", ("(google/protobuf",)),
]
OTHER = "other Python"


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter or on PATH (the `bench` extra installs it)."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def part_of(leaf: str) -> str:
    for part, marks in PARTS:
        if any(mark in leaf for mark in marks):
            return part
    return OTHER


def summarize(raw: str, top: int = 8) -> dict[str, Any]:
    """Shares of busy samples per part, the idle share, and the busiest livestate frames."""
    parts: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        part = part_of(leaf)
        parts[part] += int(count)
        if part == "livestate":
            ours[leaf] += int(count)
    idle = parts.pop("idle (epoll, waits)", 0)
    busy = sum(parts.values())
    return {
        "samples": busy + idle,
        "idle_share": idle / max(1, busy + idle),
        "busy_shares": {part: n / max(1, busy) for part, n in parts.most_common()},
        "top_livestate": [(leaf, n / max(1, busy)) for leaf, n in ours.most_common(top)],
    }


def during(pid: int, load: list[str], seconds: float, rate: int = 250) -> dict[str, Any] | None:
    """Runs the load generator (`python -m bench LOAD`) and samples the server while it runs;
    None when py-spy is not installed."""
    spy = py_spy()
    if spy is None:
        return None
    generator = subprocess.Popen(
        [sys.executable, "-m", "bench", *load],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
    )
    try:
        # Sample the steady middle of the run, not the channel set-up or the wind-down.
        time.sleep(1.0)
        with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
            subprocess.run(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(max(1, int(seconds - 2))),
                    "--rate",
                    str(rate),
                    "--format",
                    "raw",
                    "--output",
                    out.name,
                    "--nonblocking",
                ],
                check=True,
                capture_output=True,
            )
            raw = Path(out.name).read_text()
    finally:
        generator.wait(timeout=60 + seconds)
    return summarize(raw)

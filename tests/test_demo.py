"""`livestate demo` runs the whole system for a while and leaves nothing running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.single_redis
def test_demo_runs_the_fleet_and_stops_everything() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVESTATE_")}
    run = subprocess.run(
        [sys.executable, "-m", "livestate.client.cli", "demo", "--seconds", "8", "--nodes", "12", "--plain"],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    header = re.search(r"status page (http://127\.0\.0\.1:\d+/), embedded valkey pid (\d+)", out)
    assert header is not None, out
    lines = [line for line in out.splitlines() if line.startswith("t=")]
    assert len(lines) >= 5, out
    last = lines[-1]
    assert re.search(r"online=(\d+)", last) and int(re.search(r"online=(\d+)", last).group(1)) > 0  # type: ignore[union-attr]
    assert int(re.search(r"matched=(\d+)", last).group(1)) > 0, last  # type: ignore[union-attr]
    assert "errors=0" in last, last
    assert out.rstrip().endswith("demo stopped: server, fleet and embedded valkey are down")
    assert not _alive(int(header.group(2))), "the demo's valkey is still running"
    assert "Traceback" not in run.stderr, run.stderr


def test_demo_refuses_bad_arguments() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "livestate.client.cli", "demo", "--nodes", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2 and "--nodes must be >= 1" in run.stderr

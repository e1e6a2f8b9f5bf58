"""The TypeScript stubs against the real server: `clients/typescript/test` registers a node,
beats, matches and releases over gRPC (@connectrpc/connect-node). Runs where `node` and `npm`
are installed (.ci/run's machine has them); the packages come from the committed lockfile."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import Harness

TS = Path(__file__).resolve().parent.parent / "clients" / "typescript"
NODE, NPM = shutil.which("node"), shutil.which("npm")


@pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm are not installed here")
def test_typescript_client_registers_beats_matches_and_releases(ls: Harness) -> None:
    assert NPM is not None
    if not (TS / "node_modules" / ".bin" / "tsc").exists():
        subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=TS, check=True, timeout=300)
    env = {**os.environ, "LIVESTATE_TARGET": f"http://127.0.0.1:{ls.port}"}
    run = subprocess.run([NPM, "test"], cwd=TS, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# pass 1" in run.stdout and "# fail 0" in run.stdout, run.stdout

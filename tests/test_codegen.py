"""The contract: stubs generated from protos/ are committed and current; buf lint is clean."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOS = sorted((ROOT / "protos" / "livestate" / "v1").glob("*.proto"))
GENERATED = ROOT / "clients" / "livestate" / "v1"


def test_committed_stubs_match_protos(tmp_path: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc  # the pinned generator (dev extra)

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{ROOT / 'protos'}",
        f"-I{well_known}",
        f"--python_out={tmp_path}",
        f"--pyi_out={tmp_path}",
        f"--grpc_python_out={tmp_path}",
        *map(str, PROTOS),
    ]
    assert protoc.main(args) == 0

    fresh = tmp_path / "livestate" / "v1"
    expected = sorted(p.name for p in fresh.iterdir())
    committed = sorted(p.name for p in GENERATED.iterdir() if p.suffix in (".py", ".pyi"))
    assert committed == expected, "run `make proto` and commit the result"
    _, mismatch, errors = filecmp.cmpfiles(fresh, GENERATED, expected, shallow=False)
    assert not mismatch and not errors, f"stale stubs {mismatch or errors}: run `make proto` and commit"


def test_every_service_is_in_its_own_file() -> None:
    for proto in PROTOS:
        text = proto.read_text()
        assert text.count("\nservice ") <= 1
        if "\nservice " in text:
            assert proto.stem.endswith("_service")


def test_buf_lint_is_clean() -> None:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    if buf is None:
        pytest.fail("buf is not installed: `pip install -e '.[dev]'` brings buf-bin")
    result = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

"""The README's snippet works as written against a running server."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from harness import Harness

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_snippet_registers_beats_and_reads_online(ls: Harness) -> None:
    section = README.read_text().split("## A node in ten lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert code is not None
    source = code.group(1)
    assert len(source.strip().splitlines()) <= 10
    source = source.replace("127.0.0.1:50051", f"127.0.0.1:{ls.port}")

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "README.md", "exec"), {})

    assert out.getvalue().strip() == "LIVENESS_ONLINE"

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


def _snippets(heading: str) -> list[str]:
    section = README.read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_agent_and_scheduler_in_twenty_lines_each(ls: Harness) -> None:
    agent, scheduler = _snippets("## An agent and a scheduler in twenty lines")
    for source in (agent, scheduler):
        assert len(source.strip().splitlines()) <= 20
    target = f"127.0.0.1:{ls.port}"

    agent_ns: dict[str, object] = {}
    exec(compile(agent.replace("127.0.0.1:50051", target), "README.md", "exec"), agent_ns)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(scheduler.replace("127.0.0.1:50051", target), "README.md", "exec"), {})
    finally:
        agent_ns["stop"].set()  # type: ignore[attr-defined]
        agent_ns["beating"].join(timeout=10)  # type: ignore[attr-defined]
    assert out.getvalue().splitlines() == ["running job-42 on gpu-1", "released"]

"""docs/: every alert has a runbook section and names only metrics the server exports."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY

import livestate.server.core.metrics  # noqa: F401  (registers every metric)

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _alerts() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", (DOCS / "alerts.yml").read_text(), flags=re.M)


def test_every_alert_has_a_runbook_section_and_every_section_an_alert() -> None:
    sections = re.findall(r"^### (\w+)$", (DOCS / "operations.md").read_text(), flags=re.M)
    assert _alerts() and sorted(_alerts()) == sorted(sections)


def test_alerts_name_only_metrics_the_server_exports() -> None:
    exported = {
        sample_name
        for family in REGISTRY.collect()
        for sample_name in (
            family.name,
            f"{family.name}_total",
            f"{family.name}_bucket",
            f"{family.name}_count",
            f"{family.name}_sum",
        )
    }
    text = (DOCS / "alerts.yml").read_text()
    named = set(re.findall(r"\b((?:livestate|grpc_server)_[a-z_]+)\b", text))
    assert named and named <= exported, sorted(named - exported)

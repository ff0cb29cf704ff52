"""The Grafana dashboard in docs/grafana/ names only metrics the router and server export, and all of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from reconciler.router.metrics import RouterMetrics
from reconciler.server.memory import OverClaimWatch
from reconciler.server.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "reconciler.json"
SERIES_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def family_names(registry: CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect()}


def exported() -> set[str]:
    server = Metrics()
    OverClaimWatch(server.registry)  # the reconcile loop registers it beside the others
    return family_names(server.registry) | family_names(RouterMetrics().registry)


def dashboard_families() -> set[str]:
    body = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = [t["expr"] for panel in body["panels"] for t in panel["targets"]]
    assert expressions
    names = {name for expr in expressions for name in re.findall(r"\breconciler_[a-z0-9_]+", expr)}
    families = set()
    for name in names:
        for suffix in SERIES_SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in exported():
                name = name.removesuffix(suffix)
                break
        families.add(name)
    return families


def test_every_metric_on_the_dashboard_exists() -> None:
    assert dashboard_families() - exported() == set()


def test_every_exported_metric_is_on_the_dashboard() -> None:
    assert exported() - dashboard_families() == set()


def test_counters_are_queried_by_their_exported_series_names() -> None:
    text = DASHBOARD.read_text(encoding="utf-8")
    for counter in ("reconciler_router_requests", "reconciler_reconcile_passes", "reconciler_router_tokens"):
        assert f"{counter}_total" in text and not re.search(rf"{counter}(?!_total)\b", text)

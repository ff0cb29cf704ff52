"""Prometheus metrics of one router, in its own registry (several routers may share a process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class RouterMetrics:
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    _children: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "reconciler_router_requests", "Requests answered, by model and HTTP status", ["model", "code"], registry=r
        )
        self.latency = Histogram(
            "reconciler_router_request_seconds",
            "Time from request to the last byte of the answer",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "reconciler_router_time_to_first_token_seconds",
            "Time from request to the first body byte of the answer",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "reconciler_router_tokens", "Tokens reported in usage, by model and kind", ["model", "kind"], registry=r
        )
        self.inflight = Gauge(
            "reconciler_router_inflight_requests", "Requests in flight per instance", ["instance"], registry=r
        )
        self.decisions = Counter(
            "reconciler_router_routing_decisions",
            "Requests sent to each instance, by model",
            ["model", "instance"],
            registry=r,
        )
        self.table_version = Gauge(
            "reconciler_router_table_version", "Version of the routing table last received from a server", registry=r
        )
        self.table_stale = Gauge(
            "reconciler_router_table_stale",
            "1 while no server confirms the routing table (the router keeps routing on it)",
            registry=r,
        )
        self.members = Gauge(
            "reconciler_router_healthy_instances",
            "Instances passing their health checks, by model",
            ["model"],
            registry=r,
        )

    def of(self, metric: Counter | Gauge | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the hot path skips prometheus' lock and lookup."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

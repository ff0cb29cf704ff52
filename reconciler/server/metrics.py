"""Prometheus metrics of the server, in a registry of its own (one per server)."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from reconciler.plan import Plan

INSTANCE_STATES = ("Pending", "Scheduled", "Downloading", "Starting", "Running", "Error", "Unreachable", "Stopped")
WORKER_STATES = ("Ready", "NotReady", "Unreachable")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.passes = Counter(
            "reconciler_reconcile_passes", "Reconcile passes by outcome.", ["outcome"], registry=self.registry
        )
        self.duration = Histogram(
            "reconciler_reconcile_duration_seconds",
            "Duration of one reconcile pass.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.actions = Counter(
            "reconciler_plan_actions", "Plan actions applied, by kind.", ["action"], registry=self.registry
        )
        self.instances = Gauge("reconciler_instances", "Instances by state.", ["state"], registry=self.registry)
        self.workers = Gauge("reconciler_workers", "Workers by state.", ["state"], registry=self.registry)
        self.leader = Gauge(
            "reconciler_leader", "1 while this server holds the leader lease, else 0.", registry=self.registry
        )
        self.epoch = Gauge(
            "reconciler_leader_epoch", "The epoch of this server's lease while it leads.", registry=self.registry
        )
        self.applied_at: float | None = None
        age = Gauge(
            "reconciler_revision_age_seconds", "Seconds since the running revision was applied.", registry=self.registry
        )
        age.set_function(lambda: time.time() - self.applied_at if self.applied_at is not None else float("nan"))

    def applied(self, plan: Plan) -> None:
        for action in ("create", "replace", "delete"):
            if count := plan.count(action):
                self.actions.labels(action).inc(count)

    def census(self, instances: Iterable[str], workers: Iterable[str]) -> None:
        by_instance, by_worker = Tally(instances), Tally(workers)
        for state in INSTANCE_STATES:
            self.instances.labels(state).set(by_instance.get(state, 0))
        for state in WORKER_STATES:
            self.workers.labels(state).set(by_worker.get(state, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)

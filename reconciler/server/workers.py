"""Workers as the server sees them over time: Ready, NotReady after a missed poll, Unreachable
when even /healthz fails; and the view of the cluster handed to ``plan()``.

A lost worker keeps its last reported instances in the planning view, as NotReady with the
time it has been gone, so ``plan()`` keeps them in place until the grace period ends and only
then places them again. Pure apart from the clock value passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.observe import ObservedState, Worker
from reconciler.observe.state import WorkerStatus


@dataclass
class WorkerRecord:
    name: str
    url: str
    state: WorkerStatus = "Unreachable"
    last: Worker | None = None  # the last successful report
    last_seen: float | None = None
    lost_since: float | None = None
    missed: int = 0


class WorkerBook:
    def __init__(self) -> None:
        self.records: dict[str, WorkerRecord] = {}

    def update(self, reports: Sequence[Worker], healthy: Mapping[str, bool], now: float) -> list[tuple[str, str, str]]:
        """Take one poll's reports; returns the state changes as (worker, old, new)."""
        changes: list[tuple[str, str, str]] = []
        names = {w.name for w in reports}
        for stale in set(self.records) - names:  # dropped from the Cluster's agents
            del self.records[stale]
        for report in reports:
            record = self.records.setdefault(report.name, WorkerRecord(report.name, report.url))
            record.url = report.url
            old = record.state
            if report.state != "Unreachable":
                record.state, record.last, record.last_seen, record.lost_since, record.missed = (
                    "Ready",
                    report,
                    now,
                    None,
                    0,
                )
            else:
                record.missed += 1
                record.lost_since = record.lost_since if record.lost_since is not None else now
                record.state = "NotReady" if healthy.get(report.name) else "Unreachable"
            if record.state != old:
                changes.append((report.name, old, record.state))
        return changes

    def lost_seconds(self, name: str, now: float) -> float:
        record = self.records[name]
        if record.lost_since is None:
            return 0.0
        return now - (record.last_seen if record.last_seen is not None else record.lost_since)

    def view(self, now: float) -> ObservedState:
        """The cluster for planning: lost workers keep their last instances, marked Unreachable."""
        workers = []
        for name in sorted(self.records):
            record = self.records[name]
            if record.state == "Ready" and record.last is not None:
                workers.append(record.last)
            elif record.last is not None:
                instances = [i.model_copy(update={"state": "Unreachable"}) for i in record.last.instances]
                workers.append(
                    record.last.model_copy(
                        update={
                            "state": "NotReady",
                            "not_ready_seconds": self.lost_seconds(name, now),
                            "instances": instances,
                        }
                    )
                )
            else:
                workers.append(Worker(name=name, url=record.url, state="Unreachable", memory_total=0))
        return ObservedState.of(workers)

    def ready(self) -> set[str]:
        return {name for name, r in self.records.items() if r.state == "Ready"}

    def moves_in(self, name: str, grace: float, now: float) -> float | None:
        """Seconds until a lost worker's replicas move (0 once due); None for a Ready worker."""
        record = self.records[name]
        if record.state == "Ready" or record.last is None:
            return None
        return max(0.0, grace - self.lost_seconds(name, now))

    def next_move(self, grace: float, now: float) -> float | None:
        """Seconds until the next lost worker with instances passes its grace period.

        Only time passes then: no git or agent change would start the pass that moves them.
        """
        waits = [
            wait
            for name, record in self.records.items()
            if record.last is not None and record.last.instances
            if (wait := self.moves_in(name, grace, now))
        ]
        return min(waits, default=None)


def fence(observed: ObservedState, assigned: Mapping[str, str]) -> ObservedState:
    """Hide stale copies: an instance reported by several workers counts only where it is assigned.

    A worker that comes back after its instances were placed elsewhere still runs them; the
    plan must not keep them, so its set loses them and the next apply stops them.
    """
    where: dict[str, list[str]] = {}
    for worker in observed.workers:
        for instance in worker.instances:
            where.setdefault(instance.id, []).append(worker.name)
    keep: dict[str, str] = {}
    for instance_id, names in where.items():
        if len(names) > 1:
            ready = [n for n in names if next(w for w in observed.workers if w.name == n).state == "Ready"]
            owner = assigned.get(instance_id)
            keep[instance_id] = owner if owner in names else (ready or names)[0]
    if not keep:
        return observed
    workers = [
        w.model_copy(update={"instances": [i for i in w.instances if keep.get(i.id, w.name) == w.name]})
        for w in observed.workers
    ]
    return ObservedState.of(workers)

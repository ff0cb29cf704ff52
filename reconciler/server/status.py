"""The body of ``GET /api/status``: models, instances, workers, the revision and the last error.

``Status`` is a frozen value built at the end of each pass from what the pass saw, never
from the loop object itself; the API serves the last one (a follower, the one the leader
stored), adding who leads and which role the answering server has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.plan import PendingReplica, Rollout
from reconciler.server.memory import measured_of
from reconciler.server.workers import WorkerBook
from reconciler.spec import Desired


@dataclass
class LastPass:
    at: float = 0.0
    duration: float = 0.0
    outcome: str = ""
    phase: str = ""  # where the pass stopped when it failed


@dataclass
class Condition:
    """The last error worth showing: message plus file:line diagnostics where there are some."""

    reason: str
    message: str
    revision: str = ""
    diagnostics: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "reason": self.reason,
            "message": self.message,
            "revision": self.revision,
            "diagnostics": self.diagnostics,
        }


@dataclass(frozen=True)
class Seen:
    """What one pass knew, the inputs of a Status."""

    now: float
    book: WorkerBook
    desired: Desired | None
    pending: Sequence[PendingReplica]
    rollouts: Sequence[Rollout]
    assigned: Mapping[str, str]
    applied: Mapping[str, Any] | None
    attempted: str | None
    source: Mapping[str, str]
    error: Condition | None
    last: LastPass
    router_url: str | None


@dataclass(frozen=True)
class Status:
    body: Mapping[str, Any]

    def as_dict(self, role: str, leader: Mapping[str, object] | None) -> dict[str, Any]:
        return {**self.body, "role": role, "leader": dict(leader) if leader else None}


def build_status(seen: Seen) -> Status:
    instances = _instances(seen)
    applied = seen.applied
    return Status(
        {
            "revision": applied["revision"] if applied else None,
            "appliedAt": applied["appliedAt"] if applied else None,
            "attempted": seen.attempted,
            "source": dict(seen.source),
            "error": seen.error.as_dict() if seen.error else None,
            "lastPass": {
                "at": seen.last.at,
                "duration": round(seen.last.duration, 4),
                "outcome": seen.last.outcome,
                "phase": seen.last.phase,
            },
            "routerUrl": seen.router_url,
            "models": _models(seen, instances),
            "instances": instances,
            "workers": _workers(seen),
        }
    )


def _grace(seen: Seen) -> float:
    return seen.desired.cluster.spec.reschedule.grace_period_seconds if seen.desired else 300


def _instances(seen: Seen) -> list[dict[str, Any]]:
    instances = []
    for worker in seen.book.view(seen.now).workers:
        moves_in = seen.book.moves_in(worker.name, _grace(seen), seen.now)
        for i in worker.instances:
            if seen.assigned.get(i.id, worker.name) != worker.name:
                state, reason = "Stopping", f"stale copy: {i.id} now runs on {seen.assigned[i.id]}"
            elif moves_in is not None:  # the countdown to re-placement
                lost = seen.book.lost_seconds(worker.name, seen.now)
                when = f"moves in {moves_in:.0f} s" if moves_in > 0 else "moving (grace period over)"
                state, reason = i.state, f"worker {worker.name} lost {lost:.0f} s ago; {when}"
            else:
                state, reason = i.state, i.message
            instances.append(
                {
                    "id": i.id,
                    "model": i.model,
                    "replica": i.replica,
                    "role": i.role,
                    "worker": worker.name,
                    "gpus": list(i.gpus),
                    "state": state,
                    "reason": reason,
                    "restarts": i.restarts,
                    "progress": i.progress,
                    "pid": i.pid,
                    "port": i.port,
                    "url": f"http://{worker.ip}:{i.port}",
                    "claim": {"ram": i.claim.ram, "vram": {str(k): v for k, v in sorted(i.claim.vram.items())}},
                    "measured": measured_of(i),
                }
            )
    return instances


def _models(seen: Seen, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    models = []
    for model in seen.desired.models if seen.desired else ():
        name = model.metadata.name
        mains = [x for x in instances if x["model"] == name and x["role"] == "main"]
        ready = len({x["id"] for x in mains if x["state"] == "Running"})
        rollout = next((r for r in seen.rollouts if r.model == name), None)
        models.append(
            {
                "name": name,
                "desired": model.spec.replicas,
                "ready": ready,
                "pending": [{"replica": p.replica, "reason": p.reason} for p in seen.pending if p.model == name],
                "rollout": {"state": rollout.state, "message": rollout.message} if rollout else None,
            }
        )
    return models


def _workers(seen: Seen) -> list[dict[str, Any]]:
    workers = []
    for name in sorted(seen.book.records):
        record = seen.book.records[name]
        last = record.last
        workers.append(
            {
                "name": name,
                "url": record.url,
                "state": record.state,
                "lostSeconds": round(seen.book.lost_seconds(name, seen.now), 1),
                "movesInSeconds": _rounded(seen.book.moves_in(name, _grace(seen), seen.now)),
                "memoryTotal": last.memory_total if last else None,
                "memoryFree": last.memory_total - last.memory_used if last else None,
                "gpus": [
                    {
                        "index": g.index,
                        "name": g.name,
                        "memoryTotal": g.memory_total,
                        "memoryFree": g.memory_total - g.memory_used,
                    }
                    for g in (last.gpus if last else [])
                ],
                "instances": len(last.instances) if last else 0,
            }
        )
    return workers


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)

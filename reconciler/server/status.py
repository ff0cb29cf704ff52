"""The body of ``GET /api/status``: models, instances, workers, the revision and the last error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reconciler.server.memory import measured_of

if TYPE_CHECKING:
    from reconciler.server.loop import Reconciler


def build_status(rec: Reconciler) -> dict[str, Any]:
    now = rec.clock()
    view = rec.book.view(now)
    desired = rec.desired
    pending = rec.plan.pending if rec.plan else ()
    instances = []
    for worker in view.workers:
        for i in worker.instances:
            if rec.assigned.get(i.id, worker.name) != worker.name:
                state, reason = "Stopping", f"stale copy: {i.id} now runs on {rec.assigned[i.id]}"
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
    models = []
    for model in desired.models if desired else ():
        mains = [x for x in instances if x["model"] == model.metadata.name and x["role"] == "main"]
        ready = len({x["id"] for x in mains if x["state"] == "Running"})
        rollout = next((r for r in rec.rollouts if r.model == model.metadata.name), None)
        models.append(
            {
                "name": model.metadata.name,
                "desired": model.spec.replicas,
                "ready": ready,
                "pending": [
                    {"replica": p.replica, "reason": p.reason} for p in pending if p.model == model.metadata.name
                ],
                "rollout": {"state": rollout.state, "message": rollout.message} if rollout else None,
            }
        )
    workers = []
    for name in sorted(rec.book.records):
        record = rec.book.records[name]
        last = record.last
        workers.append(
            {
                "name": name,
                "url": record.url,
                "state": record.state,
                "lostSeconds": round(rec.book.lost_seconds(name, now), 1),
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
    applied = rec.applied
    return {
        "revision": applied["revision"] if applied else None,
        "appliedAt": applied["appliedAt"] if applied else None,
        "attempted": rec.checkout.revision if rec.checkout else None,
        "source": rec.source.describe(),
        "error": rec.error.as_dict() if rec.error else None,
        "lastPass": {"at": rec.last.at, "duration": round(rec.last.duration, 4), "outcome": rec.last.outcome},
        "routerUrl": rec.router_url,
        "models": models,
        "instances": instances,
        "workers": workers,
    }

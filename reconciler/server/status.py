"""The body of ``GET /api/status``: models, instances, workers, the revision and the last error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.server.loop import Reconciler


def build_status(rec: Reconciler) -> dict[str, Any]:
    now = rec.clock()
    view = rec.book.view(now)
    desired = rec.desired
    pending = rec.plan.pending if rec.plan else ()
    grace = desired.cluster.spec.reschedule.grace_period_seconds if desired else 300
    instances = []
    for worker in view.workers:
        moves_in = rec.book.moves_in(worker.name, grace, now)
        for i in worker.instances:
            if rec.assigned.get(i.id, worker.name) != worker.name:
                state, reason = "Stopping", f"stale copy: {i.id} now runs on {rec.assigned[i.id]}"
            elif moves_in is not None:  # the countdown to re-placement
                lost = rec.book.lost_seconds(worker.name, now)
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
                    # Filled in once the agents report measured memory (RSS / VRAM per process).
                    "measured": None,
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
                "movesInSeconds": _rounded(rec.book.moves_in(name, grace, now)),
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


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)

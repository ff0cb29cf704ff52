"""Worker states over polls, the planning view of lost workers, and stale-copy fencing."""

from __future__ import annotations

from reconciler.observe import ObservedInstance, ObservedState, Worker
from reconciler.server import WorkerBook, fence
from tests.plan.helpers import apply, desired, run, worker
from tests.plan.test_step import CLUSTER, web


def instance(instance_id: str, state: str = "Running") -> ObservedInstance:
    return ObservedInstance(id=instance_id, model="web", backend="custom", argv=["x"], port=1, state=state)  # type: ignore[arg-type]


def report(name: str, *instances: ObservedInstance) -> Worker:
    return Worker(name=name, url=f"http://{name}", memory_total=64 * 1024**3, instances=list(instances))


def lost(name: str) -> Worker:
    return Worker(name=name, url="", state="Unreachable", memory_total=0)


def test_ready_notready_unreachable() -> None:
    book = WorkerBook()
    assert book.update([report("a")], {}, now=0) == [("a", "Unreachable", "Ready")]
    assert book.update([lost("a")], {"a": True}, now=10) == [("a", "Ready", "NotReady")]
    assert book.update([lost("a")], {"a": False}, now=20) == [("a", "NotReady", "Unreachable")]
    assert book.update([report("a")], {}, now=30) == [("a", "Unreachable", "Ready")]
    assert book.ready() == {"a"}


GRACE = CLUSTER.replace("spec:\n", "spec:\n  reschedule: {gracePeriodSeconds: 300}\n")


def test_lost_worker_keeps_its_instances_until_the_grace_period_ends() -> None:
    d = desired(web(1, "--x"), GRACE)
    placed = apply(run(d, ObservedState.of([worker("a"), worker("b")])), ObservedState.of([worker("a"), worker("b")]))
    home = next(w.name for w in placed.workers if w.instances)
    other = "b" if home == "a" else "a"
    book = WorkerBook()
    book.update(list(placed.workers), {}, now=0)
    book.update([lost(home), placed.worker(other)], {}, now=100)  # type: ignore[list-item]
    view = book.view(now=100)
    gone = view.worker(home)
    assert gone is not None and gone.state == "NotReady" and gone.not_ready_seconds == 100
    assert [i.state for i in gone.instances] == ["Unreachable"]
    assert not run(d, view).has_changes  # within the grace period: nothing moves
    moved = run(d, book.view(now=400))
    assert sorted((a.action, a.worker) for a in moved.changes) == [("create", other), ("delete", home)]


def test_fence_keeps_the_assigned_copy_only() -> None:
    observed = ObservedState.of([report("a", instance("web-0")), report("b", instance("web-0"), instance("web-1"))])
    fenced = fence(observed, {"web-0": "b", "web-1": "b"})
    assert [i.id for i in fenced.worker("a").instances] == []  # type: ignore[union-attr]
    assert [i.id for i in fenced.worker("b").instances] == ["web-0", "web-1"]  # type: ignore[union-attr]
    assert fence(observed, {}).worker("a").instances  # type: ignore[union-attr]  # unknown: the first Ready one
    single = ObservedState.of([report("a", instance("web-0"))])
    assert fence(single, {"web-0": "b"}) is single

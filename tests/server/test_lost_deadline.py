"""The grace period's end as a deadline, and a lost worker's last file report."""

from __future__ import annotations

from reconciler.observe import ModelFile, ObservedState
from reconciler.server import WorkerBook, fence
from tests.plan.helpers import apply, desired, run, worker
from tests.plan.test_step import web
from tests.server.test_workers import instance, lost, report

CLUSTER = """
apiVersion: reconciler/v1
kind: Cluster
metadata: {name: test}
spec:
  reschedule: {gracePeriodSeconds: 10}
"""


def test_the_next_move_counts_down_from_the_last_time_seen() -> None:
    book = WorkerBook()
    book.update([report("a", instance("web-0")), report("b")], {}, now=100)
    assert book.next_move(10, now=101) is None  # nobody is lost
    book.update([lost("a"), report("b")], {"a": False}, now=103)
    assert book.moves_in("a", 10, now=103) == 7  # seen last at 100, not when found lost
    assert book.next_move(10, now=107) == 3
    assert book.moves_in("b", 10, now=107) is None
    assert book.next_move(10, now=111) is None  # due: nothing left to wake for
    assert book.moves_in("a", 10, now=111) == 0


def test_a_lost_worker_without_instances_sets_no_deadline() -> None:
    book = WorkerBook()
    book.update([report("a")], {}, now=0)
    book.update([lost("a")], {}, now=1)
    assert book.next_move(10, now=2) is None


def test_a_localpath_replica_leaves_a_lost_worker_that_last_reported_the_file() -> None:
    """Agents list a local path only while an instance names it: only the lost worker did."""
    d = desired(web(1, ""), CLUSTER)
    start = ObservedState.of([worker("a"), worker("b", ip="10.9.9.9")])
    placed = apply(run(d, start), start)
    home = next(w for w in placed.workers if w.instances)
    other = next(w for w in placed.workers if not w.instances)
    holding = home.model_copy(update={"files": [ModelFile(path="/bin/sh", source="local")]})
    book = WorkerBook()
    book.update([holding, other], {}, now=0)
    book.update([lost(home.name), other], {}, now=5)
    view = fence(book.view(now=11), {"web-0": home.name})
    actions = sorted((a.action, a.worker) for a in run(d, view).actions)
    assert actions == [("create", other.name), ("delete", home.name)]

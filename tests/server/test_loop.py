"""The loop, driven pass by pass against a fake of its network edge (the AgentClient): a real
folder source, a real SQLite store, the real planner. Outcomes per phase, errors retried and
never reported UpToDate, fencing by epoch, and what a follower does and does not do."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from reconciler.agent.supervisor import fencing
from reconciler.observe import ApplyResult, InstanceSpec, ObservedState, Worker
from reconciler.server import Reconciler
from reconciler.server.lease import Identity, Lease
from reconciler.server.loop import SYNC_REQUEST
from reconciler.server.store import Store, default_url
from reconciler.source import DirSource
from reconciler.spec import Agent
from tests.server.test_hosting import MODEL

GIB = 1024**3
CLUSTER = """\
apiVersion: reconciler/v1
kind: Cluster
metadata: {{name: t}}
spec:
  agents: [{{name: a, url: 'http://a.invalid'}}]
  sync: {{interval: {interval}}}
"""


class FakeAgents:
    """What agents would answer: each keeps its set and the highest (epoch, generation) it took."""

    def __init__(self, names: Sequence[str]) -> None:
        self.sets: dict[str, list[InstanceSpec]] = {n: [] for n in names}
        self.fence: dict[str, tuple[int, int]] = {n: (0, 0) for n in names}
        self.puts: list[tuple[str, int, list[str]]] = []  # (agent, epoch, ids) per accepted PUT
        self.broken: Exception | None = None

    def observe(self, agents: Sequence[Agent]) -> ObservedState:
        if self.broken is not None:
            raise self.broken
        return ObservedState.of(
            [
                Worker.model_validate(
                    {
                        "name": a.name,
                        "url": a.url,
                        "memoryTotal": 64 * GIB,
                        "cpuCount": 16,
                        "instances": [{**s.model_dump(by_alias=True), "state": "Running"} for s in self.sets[a.name]],
                    }
                )
                for a in agents
            ]
        )

    def health(self, agents: Sequence[Agent]) -> dict[str, bool]:
        return {a.name: True for a in agents}

    def put(
        self, sets: Sequence[tuple[Agent, Sequence[InstanceSpec]]], generation: int, epoch: int
    ) -> list[ApplyResult]:
        results = []
        for agent, specs in sets:
            same = sorted(s.id for s in specs) == sorted(s.id for s in self.sets[agent.name])
            if fencing(self.fence[agent.name], (epoch, generation), same) == "stale":
                results.append(ApplyResult(agent.name, False, f"HTTP 409: epoch {epoch} is older", True))
                continue
            self.fence[agent.name], self.sets[agent.name] = (epoch, generation), list(specs)
            self.puts.append((agent.name, epoch, [s.id for s in specs]))
            results.append(ApplyResult(agent.name, True, "ok"))
        return results


class Clock:
    """A monotonic clock that never moves: a server paused by SIGSTOP, as it sees itself."""

    def __call__(self) -> float:
        return 0.0


def _folder(tmp_path: Path, replicas: int = 1, interval: str = "1h") -> Path:
    folder = tmp_path / "manifests"
    folder.mkdir(exist_ok=True)
    (folder / "cluster.yaml").write_text(CLUSTER.format(interval=interval))
    (folder / "web.yaml").write_text(MODEL.format(replicas=replicas))
    return folder


def _reconciler(folder: Path, store: Store, agents: FakeAgents, lease: Lease | None = None) -> Reconciler:
    return Reconciler(DirSource(folder), store, None, agents=agents, lease=lease)


def once(rec: Reconciler) -> str:
    return asyncio.run(rec.reconcile_once())


def test_a_commit_is_applied_then_up_to_date(tmp_path: Path) -> None:
    agents = FakeAgents(["a"])
    store = Store(default_url(tmp_path))
    rec = _reconciler(_folder(tmp_path), store, agents)
    assert once(rec) == "Progressing"
    assert agents.sets["a"][0].id == "web-0"
    assert once(rec) == "UpToDate"
    status = rec.status()
    assert status["role"] == "leader" and status["error"] is None
    assert status["lastPass"]["outcome"] == "UpToDate" and status["revision"] == rec.desired_revision


def test_a_store_failure_during_a_pass_is_retried_and_the_commit_not_lost(tmp_path: Path) -> None:
    """Issue 16.4: the store locked (or a full disk) while a commit arrives."""
    agents = FakeAgents(["a"])
    store = Store(default_url(tmp_path) + "?timeout=0.2")
    folder = _folder(tmp_path)
    rec = _reconciler(folder, store, agents)
    once(rec)
    once(rec)
    (folder / "web.yaml").write_text(MODEL.format(replicas=2))
    rec.trigger()
    blocker = sqlite3.connect(tmp_path / "reconciler.db")
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(2):
            assert once(rec) == "StoreUnavailable"
            error = rec.status()["error"]
            assert error["reason"] == "StoreUnavailable" and "database is locked" in error["message"]
    finally:
        blocker.rollback()
        blocker.close()
    assert once(rec) == "Progressing"  # no new commit, no webhook: the retry alone applies it
    assert sorted(s.id for s in agents.sets["a"]) == ["web-0", "web-1"]
    once(rec)
    status = rec.status()
    assert status["error"] is None and status["revision"] == rec.desired_revision
    assert store.history()[0]["status"] == "Applied"


def test_an_unexpected_exception_is_an_error_with_its_phase_and_the_loop_goes_on(tmp_path: Path) -> None:
    agents = FakeAgents(["a"])
    rec = _reconciler(_folder(tmp_path), Store(default_url(tmp_path)), agents)
    agents.broken = RuntimeError("boom")
    assert once(rec) == "Error"
    error = rec.status()["error"]
    assert error["reason"] == "Error" and error["message"] == "observe: RuntimeError: boom"
    assert rec.status()["lastPass"]["phase"] == "observe"
    assert rec.failures == 1
    agents.broken = None
    assert once(rec) == "Progressing"
    assert rec.status()["error"] is None and rec.failures == 0


def test_the_loop_survives_an_interval_too_large_to_compute(tmp_path: Path) -> None:
    """Issue 16.3: "1" and 400 zeros, then "ms"; the schema may refuse it, the loop must not die."""
    agents = FakeAgents(["a"])
    rec = _reconciler(_folder(tmp_path, interval="1" + "0" * 400 + "ms"), Store(default_url(tmp_path)), agents)

    async def run_a_while() -> None:
        task = asyncio.create_task(rec.run())
        await asyncio.sleep(1.0)
        assert not task.done()
        task.cancel()

    asyncio.run(run_a_while())
    assert 0 < rec.interval() < float("inf")
    assert rec.last.outcome in ("Progressing", "UpToDate", "Invalid")


def test_a_stale_leader_is_fenced_by_the_agents(tmp_path: Path) -> None:
    agents = FakeAgents(["a"])
    folder = _folder(tmp_path)
    store = Store(default_url(tmp_path))
    frozen = Clock()
    old_lease = Lease(store, Identity("old", "http://old"), renew=1.0, clock=frozen)
    assert old_lease.step() == "acquired"
    old = _reconciler(folder, store, agents, old_lease)
    once(old)
    with store.engine.begin() as db:  # the old leader is paused; its lease lapses in the store
        db.execute(sa.text("UPDATE leases SET expires = 0"))
    new_lease = Lease(store, Identity("new", "http://new"), renew=1.0)
    assert new_lease.step() == "acquired"
    new = _reconciler(folder, store, agents, new_lease)
    once(new)  # a new leader hands every agent its epoch, even with nothing to change
    assert agents.puts[-1][:2] == ("a", new_lease.epoch)
    (folder / "web.yaml").write_text(MODEL.format(replicas=0))
    old.trigger()
    assert old.is_leader()  # by its own frozen clock it still leads: the agent must say no
    assert once(old) == "AgentUnavailable"
    assert [s.id for s in agents.sets["a"]] == ["web-0"]
    assert any(e["reason"] == "Fenced" for e in store.events())


def test_a_follower_changes_nothing_and_passes_webhooks_on(tmp_path: Path) -> None:
    agents = FakeAgents(["a"])
    folder = _folder(tmp_path)
    store = Store(default_url(tmp_path))
    leader_lease = Lease(store, Identity("one", "http://one"), renew=1.0)
    leader_lease.step()
    leader = _reconciler(folder, store, agents, leader_lease)
    follower_lease = Lease(store, Identity("two", "http://two"), renew=1.0)
    assert follower_lease.step() == "following"
    follower = _reconciler(folder, store, agents, follower_lease)
    once(leader)
    puts, rows = len(agents.puts), len(store.history())
    assert once(follower) == "Following"
    assert len(agents.puts) == puts and len(store.history()) == rows
    assert follower.status()["role"] == "follower"
    assert follower.status()["models"] == leader.status()["models"]  # the leader's stored status
    assert follower.plan is not None and leader.plan is not None  # routers of either route alike
    assert follower.plan.desired_sets() == leader.plan.desired_sets()
    follower.trigger()  # a webhook at the follower
    assert store.get(SYNC_REQUEST) is not None
    leader.force_fetch = False
    leader._sync_requested()
    assert leader.force_fetch

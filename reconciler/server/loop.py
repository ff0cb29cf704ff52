"""The reconcile loop, Flux-shaped and level-triggered.

One pass: fetch the source when due (a new revision is recorded as attempted first, then
loaded and validated); observe every agent; plan off the event loop; pace rollouts; apply
to the agents whose set differs; record the revision as applied only when that succeeded.
Each outcome has its requeue rule (``requeue_after``). An invalid or refused revision is
never applied and never retried: the last good one keeps being reconciled until a new
commit arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

from reconciler.errors import SourceUnavailable, SpecInvalid
from reconciler.estimate import gather_cached
from reconciler.observe import InstanceSpec, ObservedState, observe_agents, probe_health, put_instances
from reconciler.plan import Facts, Plan, plan
from reconciler.server.memory import OverClaimWatch
from reconciler.server.metrics import Metrics
from reconciler.server.rollout import Rollout, pace, surge, widen
from reconciler.server.status import build_status
from reconciler.server.store import Assignment, Store
from reconciler.server.workers import WorkerBook, fence
from reconciler.source import Checkout
from reconciler.spec import Desired, load_desired

log = logging.getLogger("reconciler.server")

Outcome = Literal["Applied", "UpToDate", "Progressing", "Invalid", "Refused", "SourceUnavailable", "AgentUnavailable"]
OnState = Callable[[Desired, ObservedState], None]
PROGRESS_POLL = 2.0  # while instances start or a rollout steps, look again soon
MAX_BACKOFF = 300.0


class Source(Protocol):
    def fetch(self) -> Checkout: ...

    def at(self, revision: str) -> Checkout: ...

    def describe(self) -> dict[str, str]: ...


def requeue_after(outcome: Outcome, interval: float, failures: int, jitter: float = 0.0) -> float:
    """Seconds until the next pass, by outcome.

    ``failures`` counts consecutive failed passes (this one included); ``jitter`` in [0, 1)
    spreads the passes of many servers over a tenth of the interval.
    """
    if outcome in ("SourceUnavailable", "AgentUnavailable"):
        return min(2.0 ** max(failures - 1, 0), max(interval, 1.0), MAX_BACKOFF)
    if outcome == "Progressing":
        return min(PROGRESS_POLL, interval)
    # Applied, up to date, or a revision that must wait for a new commit: the next poll.
    return interval * (1 + 0.1 * jitter)


@dataclass
class LastPass:
    at: float = 0.0
    duration: float = 0.0
    outcome: str = ""


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


def _plan_pass(desired: Desired, view: ObservedState, assigned: dict[str, str], revision: str) -> Plan:
    found, failed = gather_cached(desired.models, view, [], desired.cluster.spec.huggingface.endpoint)
    return plan(desired, view, assigned, Facts(found, failed), revision)


def _instances_key(specs: Sequence[InstanceSpec]) -> list[tuple[str, str]]:
    return sorted((s.id, s.spec_hash) for s in specs)


class Reconciler:
    def __init__(
        self,
        source: Source,
        store: Store,
        agent_token: str | None,
        *,
        on_state: OnState | None = None,
        worker_poll: float = 10.0,
        planner: Executor | None = None,
    ) -> None:
        """``planner``: where plans are computed; a process keeps a large plan from starving the
        event loop of the GIL (a thread gets it back only every few hundred ms at 5,000 replicas)."""
        self.source = source
        self.store = store
        self.agent_token = agent_token
        self.on_state = on_state
        self.worker_poll = worker_poll
        self.planner = planner
        self.clock = time.time
        self.metrics = Metrics()
        self.over_claim = OverClaimWatch(self.metrics.registry)
        self.book = WorkerBook()
        self.wake = asyncio.Event()
        self.force_fetch = False
        self.next_fetch = 0.0
        self.failures = 0
        self.checkout: Checkout | None = None
        self.desired: Desired | None = None  # the last valid revision
        self.desired_revision = ""
        self.unapplied_row: int | None = None  # the store row of a valid revision not yet applied
        self.applied = store.applied()
        self.error: Condition | None = None
        self.plan: Plan | None = None
        self.rollouts: tuple[Rollout, ...] = ()
        self.observed = ObservedState()
        self.assigned = {k: a.worker for k, a in store.assignments().items()}
        self.last = LastPass()
        self.router_url: str | None = None  # where the hosted router answers, for status
        if self.applied is not None:
            self.metrics.applied_at = self.applied["appliedAt"]

    # --- driving -----------------------------------------------------------------------

    def trigger(self) -> None:
        """Fetch the source now (a webhook or a watched change)."""
        self.force_fetch = True
        self.wake.set()

    async def run(self) -> None:
        while True:
            outcome = await self.reconcile_once()
            interval = self.interval()
            delay = requeue_after(outcome, interval, self.failures, random.random())
            if outcome == "SourceUnavailable":
                self.next_fetch = self.clock() + delay
            sleep = max(0.0, min(delay, self.worker_poll, self.next_fetch - self.clock()))
            if not self.wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=sleep)
            self.wake.clear()

    def interval(self) -> float:
        return self.desired.cluster.spec.sync.interval_seconds() if self.desired else 30.0

    async def reconcile_once(self) -> Outcome:
        started = time.perf_counter()
        try:
            outcome = await self._reconcile()
        except Exception:  # a bug must not end the loop; the next pass tries again
            log.exception("reconcile pass failed")
            outcome = "AgentUnavailable"
        self.failures = self.failures + 1 if outcome in ("SourceUnavailable", "AgentUnavailable") else 0
        duration = time.perf_counter() - started
        self.last = LastPass(self.clock(), duration, outcome)
        self.metrics.passes.labels(outcome).inc()
        self.metrics.duration.observe(duration)
        return outcome

    # --- one pass ----------------------------------------------------------------------

    async def _reconcile(self) -> Outcome:
        stalled = await self._source_phase()
        if stalled == "SourceUnavailable" or self.desired is None:
            return stalled or "Invalid"
        desired = self.desired
        observed = await self._observe(desired)
        view = fence(self.book.view(self.clock()), self.assigned)
        result = await self.compute_plan(desired, view)
        surging = surge(desired, result, view)
        if surging:  # room for one more replica beside the old ones: no replica down while replaced
            wider = await self.compute_plan(widen(desired, surging), view)
            counts = {m.metadata.name: m.spec.replicas for m in desired.models}
            if not any(p.model in surging and p.replica == counts[p.model] for p in wider.pending):
                result = wider
        paced, self.rollouts = pace(result, view)
        self.plan = paced
        sets = paced.desired_sets()
        ready = self.book.ready()
        running = {w.name: _instances_key(w.instances) for w in observed.workers}
        drift = [
            (agent, sets.get(agent.name, []))
            for agent in desired.cluster.spec.agents
            if agent.name in ready and _instances_key(sets.get(agent.name, [])) != running.get(agent.name, [])
        ]
        outcome: Outcome = "UpToDate"
        if drift:
            generation = self.store.next_generation()
            results = await asyncio.to_thread(put_instances, drift, self.agent_token, generation)
            failed = [r for r in results if not r.ok]
            for r in results:
                self._event("Warning" if not r.ok else "Normal", "Apply", f"worker/{r.agent}", r.detail)
            if failed:
                return "AgentUnavailable"
            self.metrics.applied(paced)
            outcome = "Applied"
        self._remember_assignments(sets)
        if self.unapplied_row is not None:
            now = self.clock()
            summary = {k: paced.count(k) for k in ("create", "replace", "delete", "keep")} | {
                "pending": len(paced.pending)
            }
            self.store.finish(self.unapplied_row, "Applied", summary=summary, applied_at=now)
            self._event("Normal", "Applied", f"revision/{self.desired_revision[:12]}", _summary_text(summary))
            self.unapplied_row = None
            self.applied = self.store.applied()
            self.metrics.applied_at = now
            if self.error is not None and self.error.reason not in ("Invalid", "Refused"):
                self.error = None
        if stalled is not None:
            return stalled
        starting = any(
            i.state not in ("Running", "Error") for w in view.workers if w.state == "Ready" for i in w.instances
        )
        if drift or starting or any(r.state == "Progressing" for r in self.rollouts):
            return "Progressing"
        return outcome

    async def compute_plan(self, desired: Desired, view: ObservedState) -> Plan:
        """Plan off the event loop: in the planner process when there is one, else a thread."""
        # The YAML nodes kept for error locations are not needed to plan, nor worth pickling.
        call = partial(_plan_pass, replace(desired, locations={}), view, dict(self.assigned), self.desired_revision)
        if self.planner is None:
            return await asyncio.to_thread(call)
        return await asyncio.get_running_loop().run_in_executor(self.planner, call)

    async def _source_phase(self) -> Outcome | None:
        """Fetch when due; load a new revision. Returns a terminal outcome, or None to go on."""
        now = self.clock()
        if not (self.force_fetch or now >= self.next_fetch or self.checkout is None):
            return self._stalled()
        self.force_fetch = False
        try:
            checkout = await asyncio.to_thread(self.source.fetch)
        except SourceUnavailable as exc:
            self._fail(Condition("SourceUnavailable", str(exc)))
            return "SourceUnavailable"
        try:
            return await self._load(checkout)
        finally:  # the interval of the revision just loaded, when it is valid
            self.next_fetch = now + self.interval() * (1 + 0.1 * random.random())

    async def _load(self, checkout: Checkout) -> Outcome | None:
        if self.error is not None and self.error.reason == "SourceUnavailable":
            self.error = None
        if self.checkout is not None and checkout.revision == self.checkout.revision:
            return self._stalled()
        self.checkout = checkout
        revision = checkout.revision
        # Attempted is recorded first; a restart that finds the applied revision adds no row.
        resumed = self.applied is not None and self.applied["revision"] == revision and self.desired is None
        row = None if resumed else self.store.attempt(revision, self.clock())
        try:
            desired = await asyncio.to_thread(load_desired, checkout.path)
        except SpecInvalid as exc:
            # Paths as the repository names them, not where the server's clone lies.
            found = [replace(d, path=_relative(d.path, checkout.path)) for d in exc.diagnostics]
            message = "\n".join(map(str, found))
            diagnostics = [d.as_dict() for d in found]
            if row is not None:
                self.store.finish(row, "Invalid", error=message, diagnostics=diagnostics)
            self._fail(Condition("Invalid", message, revision, diagnostics))
            await self._resume_applied()
            return "Invalid"
        refusal = self._refuse_empty(desired)
        if refusal:
            if row is not None:
                self.store.finish(row, "Refused", error=refusal)
            self._fail(Condition("Refused", refusal, revision))
            await self._resume_applied()
            return "Refused"
        if self.unapplied_row is not None:
            self.store.finish(self.unapplied_row, "Superseded", error=f"superseded by {revision}")
        self.desired, self.desired_revision, self.unapplied_row = desired, revision, row
        self.error = None
        self._event("Normal", "Fetched", f"revision/{revision[:12]}", f"{len(desired.models)} models")
        return None

    async def _resume_applied(self) -> None:
        """After a restart onto a bad head, keep reconciling the last applied revision."""
        if self.desired is not None or self.applied is None:
            return
        revision = str(self.applied["revision"])
        try:
            checkout = await asyncio.to_thread(self.source.at, revision)
            self.desired = await asyncio.to_thread(load_desired, checkout.path)
        except (SourceUnavailable, SpecInvalid) as exc:
            log.warning("cannot load the applied revision %s: %s", revision[:12], exc)
            return
        self.desired_revision = revision
        self._event("Normal", "Resumed", f"revision/{revision[:12]}", "the last applied revision keeps running")

    def _stalled(self) -> Outcome | None:
        """A revision that stays invalid or refused keeps its outcome until a new commit."""
        if self.error is not None and self.error.reason in ("Invalid", "Refused"):
            return "Invalid" if self.error.reason == "Invalid" else "Refused"
        return None

    def _refuse_empty(self, desired: Desired) -> str | None:
        """Argo CD's guard: a commit that would delete every model needs sync.allowEmpty."""
        if desired.models or desired.cluster.spec.sync.allow_empty:
            return None
        running = any(w.instances for w in self.observed.workers)
        summary = self.applied["summary"] if self.applied else {}
        had_models = self.desired is not None and bool(self.desired.models)
        if had_models or running or any(summary.get(k) for k in ("create", "replace", "keep")):
            return (
                "refused: this revision deletes every model; set spec.sync.allowEmpty: true in the Cluster to allow it"
            )
        return None

    async def _observe(self, desired: Desired) -> ObservedState:
        agents = desired.cluster.spec.agents
        observed = await asyncio.to_thread(observe_agents, agents, self.agent_token)
        lost = [a for a in agents if (w := observed.worker(a.name)) is None or w.state == "Unreachable"]
        healthy = await asyncio.to_thread(probe_health, lost) if lost else {}
        for name, old, new in self.book.update(observed.workers, healthy, self.clock()):
            self._event("Normal" if new == "Ready" else "Warning", new, f"worker/{name}", f"{old} -> {new}")
        self.observed = observed
        for instance_id, why in self.over_claim.update(observed):
            self._event("Warning", "OverClaim", f"instance/{instance_id}", why)
        restarts = {i.id: i.restarts for w in observed.workers for i in w.instances}
        self.store.set_restarts(restarts)
        view = self.book.view(self.clock())
        self.metrics.census(
            (i.state for w in view.workers for i in w.instances),
            (r.state for r in self.book.records.values()),
        )
        if self.on_state is not None:
            self.on_state(desired, observed)
        return observed

    # --- bookkeeping -------------------------------------------------------------------

    def _remember_assignments(self, sets: dict[str, list[InstanceSpec]]) -> None:
        current = {
            s.id: Assignment(s.id, s.model, worker, tuple(s.gpus)) for worker, specs in sets.items() for s in specs
        }
        if {k: a.worker for k, a in current.items()} != self.assigned:
            self.store.set_assignments(current.values(), self.clock())
            self.assigned = {k: a.worker for k, a in current.items()}

    def _fail(self, condition: Condition) -> None:
        same = self.error is not None and self.error.as_dict() == condition.as_dict()
        self.error = condition
        if not same:
            first = condition.message.splitlines()[0] if condition.message else ""
            self._event("Warning", condition.reason, f"revision/{condition.revision[:12]}", first)

    def _event(self, type_: str, reason: str, object_: str, message: str) -> None:
        log.info("%s %s %s: %s", type_, reason, object_, message)
        self.store.add_event(type_, reason, object_, message, self.clock())

    # --- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return build_status(self)


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _summary_text(summary: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in summary.items())

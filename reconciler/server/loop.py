"""The reconcile loop, Flux-shaped and level-triggered.

One pass runs named phases: source (fetch when due; a new revision is recorded as attempted
first), validate (load the manifests), observe (every agent), plan (the next step of every
rollout, off the event loop), apply (to the agents whose set differs), health (is anything still starting).
The revision is recorded as applied only when every phase succeeded. Each outcome has its
requeue rule (``requeue_after``). An invalid or refused revision is never applied and never
retried: the last good one keeps being reconciled until a new commit arrives. A pass that
fails for any other reason (an agent, the store, a bug) ends as an error, is shown in status
and is retried with backoff; the loop itself never stops.

Only the leader (``Lease``) changes anything. A follower fetches, validates and observes to
serve reads and its router, and passes webhooks on to the leader through the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from reconciler.errors import SourceUnavailable, SpecInvalid, one_line
from reconciler.estimate import FactBook, cache_file
from reconciler.observe import AgentClient, HttpAgentClient, InstanceSpec, ObservedState, apply_sets
from reconciler.plan import Plan, Rollout, step
from reconciler.server import reasons
from reconciler.server.lease import Lease
from reconciler.server.memory import OverClaimWatch
from reconciler.server.metrics import Metrics
from reconciler.server.reasons import Outcome, Phase
from reconciler.server.status import Condition, LastPass, Seen, Status, build_status
from reconciler.server.store import Assignment, Store, StoreUnavailable
from reconciler.server.workers import WorkerBook, fence
from reconciler.source import Checkout
from reconciler.spec import Desired, load_desired

log = logging.getLogger("reconciler.server")

OnState = Callable[[Desired, ObservedState], None]
PROGRESS_POLL = 2.0  # while instances start or a rollout steps, look again soon
MAX_BACKOFF = 300.0
DEFAULT_INTERVAL = 30.0
MOVE_MARGIN = 0.1  # plan() moves replicas once a worker is lost for more than the grace period
SYNC_REQUEST = "sync_request"  # meta key: a follower's webhook asks the leader to fetch now
STATUS_KEY = "status"  # meta key: the leader's last Status, served by followers


class Source(Protocol):
    def fetch(self) -> Checkout: ...

    def at(self, revision: str) -> Checkout: ...

    def describe(self) -> dict[str, str]: ...


def requeue_after(outcome: Outcome, interval: float, failures: int, jitter: float = 0.0) -> float:
    """Seconds until the next pass, by outcome.

    ``failures`` counts consecutive failed passes (this one included); ``jitter`` in [0, 1)
    spreads the passes of many servers over a tenth of the interval.
    """
    if outcome in reasons.RETRIED:
        return min(2.0 ** max(failures - 1, 0), max(interval, 1.0), MAX_BACKOFF)
    if outcome == reasons.PROGRESSING:
        return min(PROGRESS_POLL, interval)
    # Applied, up to date, following, or a revision that must wait for a new commit: the next poll.
    return interval * (1 + 0.1 * jitter)


def warm_up() -> bool:
    """Run in the planner process at start: loading this function imports everything a plan needs."""
    return True


class Reconciler:
    def __init__(
        self,
        source: Source,
        store: Store,
        agent_token: str | None,
        *,
        agents: AgentClient | None = None,
        lease: Lease | None = None,
        on_state: OnState | None = None,
        worker_poll: float = 10.0,
        planner: Executor | None = None,
    ) -> None:
        """``agents``: the agent I/O (HTTP with ``agent_token`` unless given). ``lease``: the
        leader lease among the servers of the store; without one this server always leads.
        ``planner``: where plans are computed; a process keeps a large plan from starving the
        event loop of the GIL (a thread gets it back only every few hundred ms at 5,000 replicas)."""
        self.source = source
        self.store = store
        self.agent_token = agent_token
        self.agents: AgentClient = agents or HttpAgentClient(agent_token)
        self.lease = lease
        self.on_state = on_state
        self.worker_poll = worker_poll
        self.planner = planner
        self.facts = FactBook(disk=cache_file())  # read here, once per change; the planner gets data
        self.clock = time.time
        self.metrics = Metrics()
        self.over_claim = OverClaimWatch(self.metrics.registry)
        self.book = WorkerBook()
        self.wake = asyncio.Event()
        self.force_fetch = False
        self.next_fetch = 0.0
        self.failures = 0
        self.leading = False  # the role the passes act in; switched only between passes
        self.fenced: set[str] = set()  # agents that accepted a set under our epoch
        self.sync_seen: str | None = None
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
        self.phase: Phase = "source"
        self.leader_seen: dict[str, object] | None = None
        self.router_url: str | None = None  # where the hosted router answers, for status
        if self.applied is not None:
            self.metrics.applied_at = self.applied["appliedAt"]
        self.current = build_status(self._seen())  # the shape of status before the first pass ends

    # --- driving -----------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self.lease is None or self.lease.is_leader()

    @property
    def epoch(self) -> int:
        return self.lease.epoch or 0 if self.lease is not None else 0

    def trigger(self) -> None:
        """Fetch the source now (a webhook or a watched change); a follower tells the leader too."""
        if not self.is_leader():
            try:  # off the event loop: a store that does not answer must not stall the API
                asyncio.get_running_loop().run_in_executor(None, self._request_sync)
            except RuntimeError:  # called outside the loop
                self._request_sync()
        self.force_fetch = True
        self.wake.set()

    def _request_sync(self) -> None:
        try:
            self.store.put(SYNC_REQUEST, str(time.time_ns()))
        except StoreUnavailable as exc:
            log.warning("cannot pass the sync request on to the leader: %s", exc)

    async def run(self) -> None:
        while True:
            outcome = await self.reconcile_once()
            delay = requeue_after(outcome, self.interval(), self.failures, random.random())
            if outcome == reasons.SOURCE_UNAVAILABLE:
                self.next_fetch = self.clock() + delay
            sleep = max(0.0, min(delay, self.worker_poll, self.next_fetch - self.clock(), self.until_move()))
            if not self.wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=sleep)
            self.wake.clear()

    def until_move(self) -> float:
        """Seconds until a lost worker's grace period ends: a deadline. The pass that moves its
        replicas must run then, though neither git nor any agent changed (a moment after it:
        plan() moves them once the grace period is exceeded)."""
        if self.desired is None:
            return float("inf")
        wait = self.book.next_move(self.desired.cluster.spec.reschedule.grace_period_seconds, self.clock())
        return float("inf") if wait is None else wait + MOVE_MARGIN

    def interval(self) -> float:
        """The Cluster's sync interval; the default when there is none or it cannot be used."""
        if self.desired is None:
            return DEFAULT_INTERVAL
        try:
            seconds = float(self.desired.cluster.spec.sync.interval_seconds())
        except (ArithmeticError, ValueError):
            return DEFAULT_INTERVAL
        return seconds if 0 < seconds < float("inf") else DEFAULT_INTERVAL

    async def hold_lease(self) -> None:
        """Keep (or try to take) the lease every ``renew`` seconds; wake the loop on a change."""
        if self.lease is None:
            return
        lease = self.lease
        while True:
            try:
                change = await asyncio.to_thread(lease.step)
                if change in ("acquired", "lost"):
                    log.info("%s the leader lease (epoch %s)", change, lease.epoch)
                    self.wake.set()
                holder = await asyncio.to_thread(lease.holder)
                self.leader_seen = {"id": holder.id, "epoch": holder.epoch, "url": holder.url} if holder else None
                if self.leading and lease.is_leader():
                    await asyncio.to_thread(self._sync_requested)
            except StoreUnavailable as exc:
                log.warning("leader lease: %s", exc)
            except Exception:  # a bug here must not stop the renewals of a leader
                log.exception("leader lease step failed")
            await asyncio.sleep(lease.renew)

    def _sync_requested(self) -> None:
        request = self.store.get(SYNC_REQUEST)
        if request != self.sync_seen:
            self.sync_seen = request
            self.force_fetch = True
            self.wake.set()

    async def reconcile_once(self) -> Outcome:
        started = time.perf_counter()
        outcome: Outcome
        try:
            self._switch_role()
            outcome = await (self._reconcile() if self.leading else self._follow())
        except StoreUnavailable as exc:
            outcome = self._failed(reasons.STORE_UNAVAILABLE, str(exc))
        except Exception as exc:  # a bug must not end the loop; the pass is an Error, retried
            log.exception("reconcile pass failed in phase %s", self.phase)
            outcome = self._failed(reasons.ERROR, f"{type(exc).__name__}: {one_line(str(exc))[:500]}")
        self.failures = self.failures + 1 if outcome in reasons.RETRIED else 0
        duration = time.perf_counter() - started
        failed_in = self.phase if outcome in reasons.RETRIED else ""
        self.last = LastPass(self.clock(), duration, outcome, failed_in)
        self.metrics.passes.labels(outcome).inc()
        self.metrics.duration.observe(duration)
        self.metrics.leader.set(1 if self.leading else 0)
        self.metrics.epoch.set(self.epoch if self.leading else 0)
        await asyncio.to_thread(self._publish)
        return outcome

    def _switch_role(self) -> None:
        """Become leader or follower between passes, never inside one."""
        leading = self.is_leader()
        if leading == self.leading:
            return
        if leading:  # read first: a store failure leaves the role unswitched, to be tried again
            sync_seen, applied = self.store.get(SYNC_REQUEST), self.store.applied()
            assigned = {k: a.worker for k, a in self.store.assignments().items()}
            interrupted = self.store.interrupt_attempts(self.clock())
            self.sync_seen, self.applied, self.assigned = sync_seen, applied, assigned
        self.leading = leading
        # Either way the next pass starts from the store and the source, not from memory.
        self.checkout, self.desired, self.desired_revision, self.unapplied_row = None, None, "", None
        self.plan, self.rollouts, self.error, self.fenced = None, (), None, set()
        self.force_fetch = True
        if leading:
            self._event("Normal", reasons.LEADER, "server", f"leading at epoch {self.epoch}; {interrupted} interrupted")

    def _failed(self, reason: str, message: str) -> Outcome:
        where = f"{self.phase}: {message}"
        self.error = Condition(reason, where, self.desired_revision)
        with contextlib.suppress(StoreUnavailable):
            if self.leading:
                self._event("Warning", reason, f"revision/{self.desired_revision[:12]}", where)
        return reason  # type: ignore[return-value]

    def _publish(self) -> None:
        """Freeze what this pass saw into the Status the API serves; the leader stores it for followers."""
        if not self.leading and self.lease is not None:
            with contextlib.suppress(StoreUnavailable, ValueError):
                stored = self.store.get(STATUS_KEY)
                if stored:
                    self.current = Status(json.loads(stored))
            return
        self.current = build_status(self._seen())
        if self.lease is not None:
            with contextlib.suppress(StoreUnavailable):
                self.store.put(STATUS_KEY, json.dumps(self.current.body))

    def _seen(self) -> Seen:
        return Seen(
            now=self.clock(),
            book=self.book,
            desired=self.desired,
            pending=self.plan.pending if self.plan else (),
            rollouts=self.rollouts,
            assigned=dict(self.assigned),
            applied=self.applied,
            attempted=self.checkout.revision if self.checkout else None,
            source=self.source.describe(),
            error=self.error,
            last=self.last,
            router_url=self.router_url,
        )

    # --- one pass, as the leader ---------------------------------------------------------

    async def _reconcile(self) -> Outcome:
        self.phase = "source"
        stalled = await self._source_phase()
        if stalled == reasons.SOURCE_UNAVAILABLE or self.desired is None:
            return stalled or reasons.INVALID
        desired = self.desired
        self.phase = "observe"
        observed = await self._observe(desired, record=True)
        view = fence(self.book.view(self.clock()), self.assigned)
        self.phase = "plan"
        self.plan = await self._plan_phase(desired, view)
        self.phase = "apply"
        if not self.is_leader():  # the lease ran out while we planned: change nothing
            return reasons.FOLLOWING
        applied = await self._apply_phase(desired, observed, self.plan)
        if applied in reasons.RETRIED:
            return applied
        self._record_moves(self.plan, view)
        self._remember_assignments(self.plan.desired_sets())
        self._record_applied(self.plan)
        if self.error is not None and self.error.reason not in reasons.STALLED:
            self.error = None
        if stalled is not None:
            return stalled
        self.phase = "health"
        starting = any(
            i.state not in ("Running", "Error") for w in view.workers if w.state == "Ready" for i in w.instances
        )
        if applied == reasons.APPLIED or starting or any(r.state == "Progressing" for r in self.rollouts):
            return reasons.PROGRESSING
        return reasons.UP_TO_DATE

    async def _plan_phase(self, desired: Desired, view: ObservedState) -> Plan:
        """The next step of every rollout (plan.step), planned off the event loop."""
        paced = await self.compute_plan(desired, view)
        self.rollouts = paced.rollouts
        return paced

    async def _apply_phase(self, desired: Desired, observed: ObservedState, paced: Plan) -> Outcome:
        """PUT their set to the Ready agents whose set differs, or that have not seen our epoch."""
        ready = self.book.ready()
        applied = await asyncio.to_thread(
            apply_sets,
            desired.cluster.spec.agents,
            paced.desired_sets(),
            observed,
            ready,
            lambda sets, generation: self.agents.put(sets, generation, self.epoch),
            self.store.next_generation,
            resend=ready - self.fenced,
        )
        for r in applied.sent:
            reason = reasons.APPLY if not r.refused else reasons.FENCED
            self._event("Warning" if not r.ok else "Normal", reason, f"worker/{r.agent}", r.detail)
        self.fenced |= {r.agent for r in applied.sent if r.ok}
        if applied.failed:
            message = "; ".join(f"{r.agent}: {r.detail}" for r in applied.failed)
            return self._failed(reasons.AGENT_UNAVAILABLE, message)
        if not applied.changed:
            return reasons.UP_TO_DATE
        self.metrics.applied(paced)
        return reasons.APPLIED

    def _record_applied(self, paced: Plan) -> None:
        """The revision is applied: every phase succeeded."""
        if self.unapplied_row is None:
            return
        now = self.clock()
        summary = {k: paced.count(k) for k in ("create", "replace", "delete", "keep")} | {"pending": len(paced.pending)}
        self.store.finish(self.unapplied_row, reasons.APPLIED, summary=summary, applied_at=now)
        self._event("Normal", reasons.APPLIED, f"revision/{self.desired_revision[:12]}", _summary_text(summary))
        self.unapplied_row = None
        self.applied = self.store.applied()
        self.metrics.applied_at = now

    async def compute_plan(self, desired: Desired, view: ObservedState) -> Plan:
        """The next step, planned off the event loop: in the planner process when there is one, else a thread."""
        endpoint = desired.cluster.spec.huggingface.endpoint
        facts = await asyncio.to_thread(self.facts.gather, desired.models, view, endpoint)
        # The YAML nodes kept for error locations are not needed to plan, nor worth pickling.
        call = partial(step, replace(desired, locations={}), view, dict(self.assigned), facts, self.desired_revision)
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
            self._fail(Condition(reasons.SOURCE_UNAVAILABLE, str(exc)))
            return reasons.SOURCE_UNAVAILABLE
        try:
            loaded = await self._load(checkout)
        except Exception:  # the store failed (or a bug): this revision is fetched and loaded again
            self.force_fetch = True
            raise
        # The interval of the revision just loaded, when it is valid.
        self.next_fetch = now + self.interval() * (1 + 0.1 * random.random())
        return loaded

    async def _load(self, checkout: Checkout) -> Outcome | None:
        if self.error is not None and self.error.reason == reasons.SOURCE_UNAVAILABLE:
            self.error = None
        if self.checkout is not None and checkout.revision == self.checkout.revision:
            return self._stalled()
        revision = checkout.revision
        # Attempted is recorded first; a restart that finds the applied revision adds no row.
        resumed = self.applied is not None and self.applied["revision"] == revision and self.desired is None
        row = None if resumed else self.store.attempt(revision, self.clock())
        self.phase = "validate"
        try:
            desired = await asyncio.to_thread(load_desired, checkout.path)
        except SpecInvalid as exc:
            # Paths as the repository names them, not where the server's clone lies.
            found = [replace(d, path=_relative(d.path, checkout.path)) for d in exc.diagnostics]
            message = "\n".join(map(str, found))
            diagnostics = [d.as_dict() for d in found]
            if row is not None:
                self.store.finish(row, reasons.INVALID, error=message, diagnostics=diagnostics)
            self._fail(Condition(reasons.INVALID, message, revision, diagnostics))
            self.checkout = checkout
            await self._resume_applied()
            return reasons.INVALID
        refusal = self._refuse_empty(desired)
        if refusal:
            if row is not None:
                self.store.finish(row, reasons.REFUSED, error=refusal)
            self._fail(Condition(reasons.REFUSED, refusal, revision))
            self.checkout = checkout
            await self._resume_applied()
            return reasons.REFUSED
        if self.unapplied_row is not None:
            self.store.finish(self.unapplied_row, "Superseded", error=f"superseded by {revision}")
        self.desired, self.desired_revision, self.unapplied_row = desired, revision, row
        self.error = None
        self._event("Normal", reasons.FETCHED, f"revision/{revision[:12]}", f"{len(desired.models)} models")
        # Only now is the revision taken: a pass that failed before this point loads it again.
        self.checkout = checkout
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
        self._event("Normal", reasons.RESUMED, f"revision/{revision[:12]}", "the last applied revision keeps running")

    def _stalled(self) -> Outcome | None:
        """A revision that stays invalid or refused keeps its outcome until a new commit."""
        if self.error is not None and self.error.reason in reasons.STALLED:
            return reasons.INVALID if self.error.reason == reasons.INVALID else reasons.REFUSED
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

    async def _observe(self, desired: Desired, *, record: bool) -> ObservedState:
        """Read every agent; ``record``: the leader keeps events and restart counts in the store."""
        agents = desired.cluster.spec.agents
        observed = await asyncio.to_thread(self.agents.observe, agents)
        lost = [a for a in agents if (w := observed.worker(a.name)) is None or w.state == "Unreachable"]
        healthy = await asyncio.to_thread(self.agents.health, lost) if lost else {}
        for name, old, new in self.book.update(observed.workers, healthy, self.clock()):
            if record:
                self._event("Normal" if new == "Ready" else "Warning", new, f"worker/{name}", f"{old} -> {new}")
        self.observed = observed
        for instance_id, why in self.over_claim.update(observed):
            if record:
                self._event("Warning", "OverClaim", f"instance/{instance_id}", why)
        if record:
            self.store.set_restarts({i.id: i.restarts for w in observed.workers for i in w.instances})
        view = self.book.view(self.clock())
        self.metrics.census(
            (i.state for w in view.workers for i in w.instances),
            (r.state for r in self.book.records.values()),
        )
        if self.on_state is not None:  # the router never sees a returned worker's stale copies
            self.on_state(desired, fence(observed, self.assigned))
        return observed

    # --- one pass, as a follower ---------------------------------------------------------

    async def _follow(self) -> Outcome:
        """Keep a view for reads and routers: fetch, validate, observe and plan; apply and write nothing."""
        self.phase = "source"
        now = self.clock()
        if self.force_fetch or now >= self.next_fetch or self.checkout is None:
            self.force_fetch = False
            self.next_fetch = now + self.interval() * (1 + 0.1 * random.random())
            with contextlib.suppress(SourceUnavailable, SpecInvalid):
                checkout = await asyncio.to_thread(self.source.fetch)
                if self.checkout is None or checkout.revision != self.checkout.revision:
                    self.phase = "validate"
                    self.checkout = checkout
                    self.desired = await asyncio.to_thread(load_desired, checkout.path)
                    self.desired_revision = checkout.revision
        self.assigned = {k: a.worker for k, a in (await asyncio.to_thread(self.store.assignments)).items()}
        if self.desired is not None:
            self.phase = "observe"
            await self._observe(self.desired, record=False)
            # The plan the leader applies (same inputs, same plan): what routers of this server route by.
            self.phase = "plan"
            self.plan = await self._plan_phase(self.desired, fence(self.book.view(self.clock()), self.assigned))
        self.error = None
        return reasons.FOLLOWING

    # --- bookkeeping -------------------------------------------------------------------

    def _record_moves(self, applied: Plan, view: ObservedState) -> None:
        """One event per replica that changes worker (its worker was lost) or port (it was taken)."""
        ports = {(w.name, i.id): i.port for w in view.workers for i in w.instances}
        for action in applied.actions:
            spec, worker = action.instance, action.worker
            before = self.assigned.get(spec.id)
            if action.action == "create" and before is not None and before != worker:
                why = action.reason.removeprefix(f"moved from {before}: ")
                self._event("Normal", "Moved", f"instance/{spec.id}", f"{before} -> {worker}: {why}")
            old_port = ports.get((worker, spec.id))
            if action.action == "replace" and old_port not in (None, spec.port):
                message = f"port {old_port} -> {spec.port} on {worker}: {action.reason}"
                self._event("Normal", "Moved", f"instance/{spec.id}", message)

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
        """The last pass's Status, with this server's role and the leader it knows of."""
        leader = self.leader_seen
        if self.lease is None or (self.leading and leader is None):
            leader = {"id": self.lease.me.id if self.lease else "", "epoch": self.epoch, "url": ""}
        body = self.current.as_dict("leader" if self.leading else "follower", leader)
        if not self.leading and self.error is not None:  # the store failed us, not the leader
            body["error"] = self.error.as_dict()
        return body


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _summary_text(summary: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in summary.items())

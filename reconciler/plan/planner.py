"""``plan(desired, observed, assignments)``: the pure heart of reconciler.

No clock, environment, network or files: the same inputs give the same plan, byte
for byte. Running instances whose inputs did not change stay where they are (their
claims are counted first), so adding a model never moves another one.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.estimate.metadata import ModelMetadata, source_key
from reconciler.observe import GIB, InstanceSpec, ObservedInstance, ObservedState, Worker
from reconciler.plan.model import Action, Layout, PendingReplica, Plan
from reconciler.plan.ports import PortBook
from reconciler.render import render_helper, render_main
from reconciler.schedule import Capacity, ModelContext, Placement, Scheduler, Unschedulable
from reconciler.spec import Desired


@dataclass(frozen=True)
class Facts:
    """What was read about the models' files at the edge (see ``estimate.gather``)."""

    metadata: Mapping[str, ModelMetadata] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)


def model_hash(ctx: ModelContext) -> str:
    """Hash of every input that shapes a model's instances; unchanged hash -> keep them."""
    body = {
        # The replica count and the rollout pace shape no instance: changing them restarts nothing.
        "spec": ctx.model.spec.model_dump(
            mode="json", by_alias=True, exclude={"replicas", "max_surge", "max_unavailable"}
        ),
        "backend": ctx.backend,
        "category": ctx.category,
        "context": ctx.context,
        "parallel": ctx.parallel,
        "file": ctx.metadata.file if ctx.metadata else None,
        "weights": ctx.metadata.weight_bytes if ctx.metadata else None,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class _Group:
    """The observed processes of one replica (main + helpers), wherever they run."""

    members: list[tuple[str, ObservedInstance]] = field(default_factory=list)

    @property
    def main(self) -> tuple[str, ObservedInstance] | None:
        return next(((w, i) for w, i in self.members if i.role == "main"), None)


def _groups(observed: ObservedState) -> dict[tuple[str, int], _Group]:
    groups: dict[tuple[str, int], _Group] = defaultdict(_Group)
    for worker in observed.workers:
        for instance in worker.instances:
            groups[(instance.model, instance.replica)].members.append((worker.name, instance))
    return {key: groups[key] for key in sorted(groups)}


def _worker_gone(worker: Worker | None, grace: int) -> str | None:
    if worker is None:
        return "its worker is no longer observed"
    if worker.state == "Unreachable":
        return f"worker {worker.name} is Unreachable"
    if worker.state == "NotReady" and worker.not_ready_seconds > grace:
        return f"worker {worker.name} has been NotReady for {worker.not_ready_seconds:.0f}s (grace {grace}s)"
    return None


def plan(
    desired: Desired,
    observed: ObservedState,
    assignments: Mapping[str, str] | None = None,
    facts: Facts | None = None,
    revision: str = "",
) -> Plan:
    """Diff what git asks for against what the agents run.

    ``assignments`` maps instance ids to the worker they were last placed on (from the
    server's store), used as a preference when an instance must be placed again.
    """
    facts = facts or Facts()
    assignments = assignments or {}
    cluster = desired.cluster
    workers = {w.name: w for w in observed.workers}
    agent_labels = {a.name: dict(a.labels) for a in cluster.spec.agents}
    capacity = Capacity(
        observed.workers,
        int(cluster.spec.reserved.ram_gib * GIB),
        int(cluster.spec.reserved.vram_gib * GIB),
        {a.name: a.reserved_bytes() for a in cluster.spec.agents if a.reserved is not None},
    )
    ports = PortBook(workers, cluster.spec.ports())
    contexts = {}
    for model in desired.models:
        key = source_key(model.spec.source)
        contexts[model.metadata.name] = ModelContext.resolve(
            model, cluster, facts.metadata.get(key), facts.errors.get(key), observed.workers
        )
    hashes = {name: model_hash(ctx) for name, ctx in contexts.items()}
    grace = cluster.spec.reschedule.grace_period_seconds

    actions: list[Action] = []
    pending: list[PendingReplica] = []
    to_place: dict[tuple[str, int], tuple[str, str | None, _Group | None]] = {}  # -> (reason, prefer, old)
    kept: set[tuple[str, int]] = set()

    for (model_name, replica), group in _groups(observed).items():
        ctx = contexts.get(model_name)
        if ctx is None or replica >= ctx.model.spec.replicas:
            why = "model is no longer in git" if ctx is None else f"scaled down to {ctx.model.spec.replicas} replicas"
            if cluster.spec.sync.prune or ctx is not None:
                actions.extend(Action("delete", w, i, why) for w, i in group.members)
            else:
                actions.extend(Action("keep", w, i, f"{why}; prune is off") for w, i in group.members)
                _hold(capacity, ports, group, model_name)
            continue
        main = group.main
        gone = next((g for g in (_worker_gone(workers.get(w), grace) for w, _ in group.members) if g), None)
        # No modelHash: written by hand into a snapshot; nothing tells it changed, so it stays.
        changed = [i.id for _, i in group.members if i.model_hash and i.model_hash != hashes[model_name]]
        taken = None if gone else ports.evicted(group.members)  # a foreign process holds its port
        if main is not None and gone is None and not changed and taken is None:
            actions.extend(Action("keep", w, i, "up to date") for w, i in group.members)
            _hold(capacity, ports, group, model_name)
            kept.add((model_name, replica))
            continue
        reason = gone or taken or ("the model's spec changed" if changed else "its main instance is missing")
        to_place[(model_name, replica)] = (reason, main[0] if main and gone is None else None, group)

    scheduler = Scheduler(observed.workers, capacity, agent_labels)
    for name, ctx in sorted(contexts.items()):
        for replica in range(ctx.model.spec.replicas):
            if (name, replica) in kept:
                continue
            reason, prefer, old = to_place.get((name, replica), ("new replica", None, None))
            prefer = prefer or assignments.get(f"{name}-{replica}")
            outcome = scheduler.place(ctx, desired.selector(ctx.model.spec.scheduling.worker_selector or ""), prefer)
            old_members = old.members if old else []
            if isinstance(outcome, Unschedulable):
                pending.append(PendingReplica(name, replica, outcome.reason))
                actions.extend(
                    Action("delete", w, i, f"{reason}; the new spec cannot be placed") for w, i in old_members
                )
                continue
            placed = _render(ctx, outcome, replica, hashes[name], workers, ports, old_members)
            if placed is None:
                pending.append(PendingReplica(name, replica, ports.refusal))
                actions.extend(Action("delete", w, i, reason) for w, i in old_members)
                continue
            for worker, spec in placed:
                capacity.take(worker, spec.claim, name, spec.id)
            actions.extend(_diff(placed, old_members, reason, _layout(ctx, outcome)))
    return Plan.build(revision, actions, pending)


def _hold(capacity: Capacity, ports: PortBook, group: _Group, model: str) -> None:
    for worker, instance in group.members:
        capacity.take(worker, instance.claim, model, instance.id)
        ports.hold(worker, instance.port)


def _render(
    ctx: ModelContext,
    placement: Placement,
    replica: int,
    mhash: str,
    workers: Mapping[str, Worker],
    ports: PortBook,
    old: list[tuple[str, ObservedInstance]],
) -> list[tuple[str, InstanceSpec]] | None:
    """Every process of one replica: helpers first (the main one names their addresses)."""
    base = f"{ctx.name}-{replica}"
    previous = {(w, i.id): i.port for w, i in old}
    placed: list[tuple[str, InstanceSpec]] = []
    rpc: list[str] = []
    env: dict[str, str] = {}
    main_worker = workers[placement.worker]
    if placement.subordinates and placement.strategy == "ray":
        head_id = f"{base}-ray-head"
        port = ports.take(main_worker.name, previous.get((main_worker.name, head_id)))
        if port is None:
            return None
        placed.append(
            (
                main_worker.name,
                render_helper(
                    ctx,
                    "ray-head",
                    main_worker,
                    placement.gpus,
                    placement.claim.model_copy(update={"ram": 0, "vram": {}}),
                    port,
                    head_id,
                    replica,
                    mhash,
                    cache_vram=placement.claim.vram_total,
                ),
            )
        )
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    for index, sub in enumerate(placement.subordinates):
        worker = workers[sub.worker]
        helper_id = f"{base}-{sub.role}-{index}"
        port = ports.take(worker.name, previous.get((worker.name, helper_id)))
        if port is None:
            return None
        head = env.get("RAY_ADDRESS", "").replace("127.0.0.1", main_worker.ip)
        placed.append(
            (
                worker.name,
                render_helper(
                    ctx,
                    sub.role,
                    worker,
                    sub.gpus,
                    sub.claim,
                    port,
                    helper_id,
                    replica,
                    mhash,
                    head,
                    sub.claim.vram_total,
                ),
            )
        )
        rpc.append(f"{worker.ip}:{port}")
    port = ports.take(main_worker.name, previous.get((main_worker.name, base)))
    if port is None:
        return None
    placed.append((main_worker.name, render_main(ctx, placement, main_worker, port, base, replica, mhash, rpc, env)))
    return placed


def _layout(ctx: ModelContext, placement: Placement) -> Layout:
    gguf = ctx.metadata.gguf if ctx.metadata else None
    return Layout(
        placement.strategy,
        placement.tensor_parallel,
        placement.pipeline_parallel,
        placement.offload_layers,
        gguf.block_count + 1 if gguf is not None and placement.offload_layers is not None else None,
    )


def _diff(
    placed: list[tuple[str, InstanceSpec]], old: list[tuple[str, ObservedInstance]], reason: str, layout: Layout
) -> list[Action]:
    old_by_key = {(w, i.id): i for w, i in old}
    actions = []
    for worker, spec in placed:
        if (worker, spec.id) in old_by_key:
            actions.append(Action("replace", worker, spec, reason, layout))
        else:
            moved = next((w for w, i in old if i.id == spec.id), None)
            why = f"moved from {moved}: {reason}" if moved else reason
            actions.append(Action("create", worker, spec, why, layout))
    placed_keys = {(w, s.id) for w, s in placed}
    actions.extend(
        Action("delete", w, i, f"replaced elsewhere: {reason}")
        for (w, _), i in old_by_key.items()
        if (w, i.id) not in placed_keys
    )
    return actions

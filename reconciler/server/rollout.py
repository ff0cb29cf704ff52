"""Rollouts without downtime: pure passes over a Plan and what the agents report.

When a model's spec changes, ``plan()`` replaces every replica at once. Two steps fix that:

- ``surge`` names the models in a rollout; the server plans them once more with one extra
  replica (``widen``). Where the scheduler finds room, that surge replica starts with the
  new spec beside the old ones and serves while each old replica is replaced; once every
  replica runs the new spec, the plan without it deletes it. Without room the rollout
  replaces in place, still one replica at a time.
- ``pace`` lets one replica change per model while the others keep their old instances:
  the next goes only once every new instance of the model is Running. A new instance in
  Error stops the rollout there; the old instances keep serving and the status says why.

Replicas that move because their worker was lost are not paced: they are not serving anyway.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

from reconciler.observe import InstanceSpec, ObservedInstance, ObservedState
from reconciler.plan import Action, Plan
from reconciler.spec import Desired


@dataclass(frozen=True)
class Rollout:
    model: str
    state: str  # "Progressing" or "Stalled"
    message: str


def _old(observed: ObservedState) -> dict[tuple[str, str], ObservedInstance]:
    return {(w.name, i.id): i for w in observed.workers for i in w.instances}


def _is_rollout(actions: list[Action], old: dict[tuple[str, str], ObservedInstance]) -> str | None:
    """The new model hash when this replica's actions change the spec of running instances."""
    new = next((a.instance.model_hash for a in actions if a.action in ("create", "replace")), None)
    if new is None:
        return None
    for action in actions:
        before = old.get((action.worker, action.instance.id))
        if action.action in ("replace", "delete") and before is not None and before.model_hash != new:
            return new
    return None


def _hold(actions: list[Action], old: dict[tuple[str, str], ObservedInstance], why: str) -> list[Action]:
    held = []
    for action in actions:
        before = old.get((action.worker, action.instance.id))
        if action.action in ("replace", "delete") and before is not None:
            held.append(Action("keep", action.worker, before, why))
        elif action.action == "keep":
            held.append(action)
    return held


def _steps(
    plan: Plan, old: dict[tuple[str, str], ObservedInstance]
) -> tuple[dict[tuple[str, int], list[Action]], dict[str, list[tuple[int, str]]]]:
    """The plan's actions per replica, and per model the replicas whose spec changes (with the new hash)."""
    groups: dict[tuple[str, int], list[Action]] = defaultdict(list)
    for action in plan.actions:
        groups[(action.instance.model, action.instance.replica)].append(action)
    steps: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for (model, replica), actions in groups.items():
        target = _is_rollout(actions, old)
        if target is not None:
            steps[model].append((replica, target))
    return groups, steps


def surge(desired: Desired, plan: Plan, observed: ObservedState) -> set[str]:
    """Models to plan with one extra replica: those in a rollout, and those whose surge
    replica still runs while a new instance is not yet Running."""
    old = _old(observed)
    _, steps = _steps(plan, old)
    models = set(steps)
    for model in desired.models:
        name, count = model.metadata.name, model.spec.replicas
        mains = [i for i in old.values() if i.model == name and i.role == "main"]
        surging = any(i.replica == count for i in mains)
        if surging and any(i.replica < count and i.state != "Running" for i in mains):
            models.add(name)
    return models


def widen(desired: Desired, models: set[str]) -> Desired:
    """The desired state with one more replica for each of ``models``."""
    return replace(
        desired,
        models=tuple(
            m.model_copy(update={"spec": m.spec.model_copy(update={"replicas": m.spec.replicas + 1})})
            if m.metadata.name in models
            else m
            for m in desired.models
        ),
    )


def pace(plan: Plan, observed: ObservedState) -> tuple[Plan, tuple[Rollout, ...]]:
    """The plan with at most one replica per model changing spec; and each rollout's state."""
    old = _old(observed)
    groups, steps = _steps(plan, old)
    if not steps:
        return plan, ()
    out: list[Action] = []
    rollouts = []
    allowed: set[tuple[str, int]] = set()
    held: dict[tuple[str, int], str] = {}
    for model, replicas in sorted(steps.items()):
        target = replicas[0][1]
        fresh = sorted(
            (i for i in old.values() if i.model == model and i.model_hash == target and i.role == "main"),
            key=lambda i: i.id,
        )
        failed = [i for i in fresh if i.state == "Error"]
        waiting: list[InstanceSpec] = [i for i in fresh if i.state != "Running"]
        stepping = {r for r, _ in replicas}
        # A new replica of this model created now (the surge) must run before any old one goes.
        waiting += [
            a.instance
            for (m, r), actions in groups.items()
            if m == model and r not in stepping
            for a in actions
            if a.action == "create" and a.instance.role == "main" and (a.worker, a.instance.id) not in old
        ]
        order = sorted(r for r, _ in replicas)
        if failed:
            why = f"rollout stopped: new instance {failed[0].id} is in Error: {failed[0].message or 'no message'}"
            rollouts.append(Rollout(model, "Stalled", f"{why}; the old instances keep serving"))
            held.update({(model, r): why for r in order})
        elif waiting:
            state = waiting[0].state if isinstance(waiting[0], ObservedInstance) else "being created"
            why = f"rollout waits for {waiting[0].id} to be Running ({state})"
            rollouts.append(Rollout(model, "Progressing", f"{why}; {len(order)} replicas to go"))
            held.update({(model, r): why for r in order})
        else:
            allowed.add((model, order[0]))
            why = f"rollout replaces replica {order[0]} first (one at a time)"
            rollouts.append(Rollout(model, "Progressing", f"replacing replica {order[0]}; {len(order)} to go"))
            held.update({(model, r): why for r in order[1:]})
    for key, actions in sorted(groups.items()):
        if key in held:
            out.extend(_hold(actions, old, held[key]))
        else:
            out.extend(actions)
    return Plan.build(plan.revision, out, plan.pending), tuple(rollouts)

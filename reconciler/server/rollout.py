"""Rollouts one replica at a time: a pure pass over a Plan and what the agents report.

When a model's spec changes, ``plan()`` replaces every replica at once. ``pace`` lets one
replica change per model while the others keep their old instances (kept as they run): the
next replica goes only once every new instance of the model is Running. A new instance in
Error stops the rollout there; the old instances keep serving and the status says why.
Replicas that move because their worker was lost are not paced: they are not serving anyway.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from reconciler.observe import ObservedInstance, ObservedState
from reconciler.plan import Action, Plan


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


def pace(plan: Plan, observed: ObservedState) -> tuple[Plan, tuple[Rollout, ...]]:
    """The plan with at most one replica per model changing spec; and each rollout's state."""
    old = _old(observed)
    groups: dict[tuple[str, int], list[Action]] = defaultdict(list)
    for action in plan.actions:
        groups[(action.instance.model, action.instance.replica)].append(action)
    steps: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for (model, replica), actions in groups.items():
        target = _is_rollout(actions, old)
        if target is not None:
            steps[model].append((replica, target))
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
        waiting = [i for i in fresh if i.state != "Running"]
        order = sorted(r for r, _ in replicas)
        if failed:
            why = f"rollout stopped: new instance {failed[0].id} is in Error: {failed[0].message or 'no message'}"
            rollouts.append(Rollout(model, "Stalled", f"{why}; the old instances keep serving"))
            held.update({(model, r): why for r in order})
        elif waiting:
            why = f"rollout waits for {waiting[0].id} to be Running ({waiting[0].state})"
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

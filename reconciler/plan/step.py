"""The next step: what ``plan`` shows, ``apply`` does and the server takes. One pure function.

``plan()`` alone replaces every replica of a changed model at once. ``step()`` paces that:

- Surge: a model in a rollout is planned with ``spec.maxSurge`` extra replicas. Where the
  scheduler finds room they start with the new spec beside the old ones and serve while the
  old replicas are replaced; once every replica runs the new spec, the plan without them
  deletes them. A surge replica never takes the room another replica needs; without room the
  rollout replaces in place.
- Pace: an old replica that is Running is replaced only while the replicas left serving stay
  at least ``replicas - maxUnavailable``; one that is not Running is replaced at once. When
  nothing is in flight and nothing may go, one replica goes anyway (in place, no room to
  surge). A new instance in Error stops the rollout: the old instances keep serving.

Replicas that move because their worker was lost are not paced: they are not serving anyway.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace

from reconciler.observe import ObservedInstance, ObservedState
from reconciler.plan.model import Action, Plan, Rollout
from reconciler.plan.planner import Facts, plan
from reconciler.spec import Desired, Model

_Old = dict[tuple[str, str], ObservedInstance]
_Groups = dict[tuple[str, int], list[Action]]


def step(
    desired: Desired,
    observed: ObservedState,
    assignments: Mapping[str, str] | None = None,
    facts: Facts | None = None,
    revision: str = "",
) -> Plan:
    """The plan of the next step, with each model's rollout (``Plan.rollouts``)."""
    narrow = plan(desired, observed, assignments, facts, revision)
    old = _old(observed)
    surging = _surging(desired, narrow, old)
    result = narrow
    if surging:
        wider = plan(widen(desired, surging), observed, assignments, facts, revision)
        result = _with_surge(narrow, wider, desired, surging)
    return _pace(result, old, desired)


def widen(desired: Desired, extra: Mapping[str, int]) -> Desired:
    """The desired state with ``extra[name]`` more replicas for each model named."""
    return replace(
        desired,
        models=tuple(
            m.model_copy(
                update={"spec": m.spec.model_copy(update={"replicas": m.spec.replicas + extra[m.metadata.name]})}
            )
            if m.metadata.name in extra
            else m
            for m in desired.models
        ),
    )


def _old(observed: ObservedState) -> _Old:
    return {(w.name, i.id): i for w in observed.workers for i in w.instances}


def _target(actions: list[Action], old: _Old) -> str | None:
    """The new model hash when this replica's actions change the spec of running instances."""
    new = next((a.instance.model_hash for a in actions if a.action in ("create", "replace")), None)
    if new is None:
        return None
    for action in actions:
        before = old.get((action.worker, action.instance.id))
        if action.action in ("replace", "delete") and before is not None and before.model_hash != new:
            return new
    return None


def _groups(result: Plan) -> _Groups:
    groups: _Groups = defaultdict(list)
    for action in result.actions:
        groups[(action.instance.model, action.instance.replica)].append(action)
    return groups


def _rolling(groups: _Groups, old: _Old) -> dict[str, tuple[str, list[int]]]:
    """Per model in a rollout: the new hash and the replicas whose spec changes now."""
    rolling: dict[str, tuple[str, list[int]]] = {}
    for (model, replica), actions in sorted(groups.items()):
        target = _target(actions, old)
        if target is not None:
            rolling.setdefault(model, (target, []))[1].append(replica)
    return rolling


def _surging(desired: Desired, narrow: Plan, old: _Old) -> dict[str, int]:
    """Models to plan with surge replicas: those in a rollout, and those whose surge replicas
    still run while a new instance is not yet Running."""
    rolling = _rolling(_groups(narrow), old)
    out = {}
    for model in desired.models:
        name, count, extra = model.metadata.name, model.spec.replicas, model.spec.max_surge
        mains = [i for i in old.values() if i.model == name and i.role == "main"]
        surging = any(i.replica >= count for i in mains)
        if extra and (name in rolling or (surging and any(i.replica < count and i.state != "Running" for i in mains))):
            out[name] = extra
    return out


def _with_surge(narrow: Plan, wider: Plan, desired: Desired, surging: Mapping[str, int]) -> Plan:
    """The wider plan, its surge replicas marked; a surge replica without room is no pending
    replica. The narrow plan when a surge replica took the room of another one."""
    counts = {m.metadata.name: m.spec.replicas for m in desired.models}

    def is_surge(model: str, replica: int) -> bool:
        return model in surging and replica >= counts[model]

    before = {(p.model, p.replica) for p in narrow.pending}
    if any((p.model, p.replica) not in before for p in wider.pending if not is_surge(p.model, p.replica)):
        return narrow
    actions = [replace(a, surge=True) if is_surge(a.instance.model, a.instance.replica) else a for a in wider.actions]
    pending = [p for p in wider.pending if not is_surge(p.model, p.replica)]
    return Plan.build(wider.revision, actions, pending)


@dataclass
class _Pace:
    """One model's rollout at this step, before the held actions are counted."""

    rollout: Rollout
    allowed: set[int]
    why: str  # the reason on every held replica


def _pace(result: Plan, old: _Old, desired: Desired) -> Plan:
    """The plan with each model's changing replicas held back to what the pace allows."""
    groups = _groups(result)
    rolling = _rolling(groups, old)
    if not rolling:
        return result
    models = {m.metadata.name: m for m in desired.models}
    mine: dict[str, dict[int, list[Action]]] = defaultdict(dict)
    for (model, replica), actions in groups.items():
        if model in rolling:
            mine[model][replica] = actions
    paces = {
        name: _pace_model(models[name], target, order, mine[name], old) for name, (target, order) in rolling.items()
    }
    out: list[Action] = []
    for (model, replica), actions in sorted(groups.items()):
        pace = paces.get(model)
        if pace is not None and replica in rolling[model][1] and replica not in pace.allowed:
            out.extend(_hold(actions, old, pace.why))
        else:
            out.extend(actions)
    return Plan.build(result.revision, out, result.pending, [paces[name].rollout for name in sorted(paces)])


def _pace_model(model: Model, target: str, order: list[int], groups: dict[int, list[Action]], old: _Old) -> _Pace:
    name, count = model.metadata.name, model.spec.replicas
    mains = {i.replica: i for i in old.values() if i.model == name and i.role == "main"}
    fresh = sorted((i for i in mains.values() if i.model_hash == target), key=lambda i: i.id)
    stepping = set(order)
    others = {r: actions for r, actions in groups.items() if r not in stepping}
    creating = [
        a.instance
        for _, actions in sorted(others.items())
        for a in actions
        if a.action == "create" and a.instance.role == "main" and (a.worker, a.instance.id) not in old
    ]
    waiting = [i.id for i in fresh if i.state != "Running"] + [i.id for i in creating]
    kept_running = sum(
        1
        for r, actions in others.items()
        if r in mains
        and mains[r].state == "Running"
        and any(a.action == "keep" and a.instance.role == "main" for a in actions)
    )
    serving = [r for r in order if r in mains and mains[r].state == "Running"]
    budget = kept_running + len(serving) - (count - model.spec.max_unavailable)
    allowed = {r for r in order if r not in serving} | set(serving[: max(budget, 0)])
    if not allowed and not waiting:  # no room to surge, none may go down: one at a time, in place
        allowed = {order[0]}
    surges = sum(1 for r, actions in others.items() if r >= count and _live(actions))
    surge_running = sum(1 for i in fresh if i.replica >= count and i.state == "Running")
    batch = max(1, surges + model.spec.max_unavailable)
    done = sum(1 for i in fresh if i.replica < count and i.state == "Running")
    of = (1 if surges else 0) + math.ceil((len(order) + sum(1 for i in fresh if i.replica < count)) / batch)
    number = 1 if surges > surge_running else min(of, (1 if surges else 0) + done // batch + 1)
    failed = [i for i in fresh if i.state == "Error"]
    if failed:
        allowed = set()
    tally = {
        "step": number,
        "of": of,
        "surge": sum(1 for i in creating if i.replica >= count),
        "replace": len(allowed),
        "keep": len(order) - len(allowed),
    }
    if failed:
        why = f"rollout stopped: new instance {failed[0].id} is in Error: {failed[0].message or 'no message'}"
        return _Pace(Rollout(name, "Stalled", f"{why}; the old instances keep serving", **tally), allowed, why)
    if not allowed:
        state = next((i.state for i in fresh if i.id == waiting[0]), "being created")
        why = f"rollout waits for {waiting[0]} to be Running ({state})"
        return _Pace(Rollout(name, "Progressing", f"{why}; {len(order)} replicas to go", **tally), allowed, why)
    going = ", ".join(map(str, sorted(allowed)))
    why = f"rollout replaces replica {going} first ({batch} at a time)"
    return _Pace(Rollout(name, "Progressing", f"replacing replica {going}; {len(order)} to go", **tally), allowed, why)


def _live(actions: list[Action]) -> bool:
    return any(a.action != "delete" and a.instance.role == "main" for a in actions)


def _hold(actions: list[Action], old: _Old, why: str) -> list[Action]:
    held = []
    for action in actions:
        before = old.get((action.worker, action.instance.id))
        if action.action in ("replace", "delete") and before is not None:
            held.append(Action("keep", action.worker, before, why))
        elif action.action == "keep":
            held.append(action)
    return held

"""Paced rollouts as data: a plan and what the agents report -> what may change now."""

from __future__ import annotations

from reconciler.observe import ObservedInstance, ObservedState
from reconciler.plan import Plan
from reconciler.server import pace, surge, widen
from tests.plan.helpers import apply, desired, run, worker

CLUSTER = """
apiVersion: reconciler/v1
kind: Cluster
metadata: {name: test}
spec:
  agents: [{name: a, url: "http://a"}, {name: b, url: "http://b"}]
"""


def web(replicas: int, flag: str) -> str:
    return f"""
apiVersion: reconciler/v1
kind: Model
metadata: {{name: web}}
spec:
  source: {{localPath: /bin/sh}}
  backend: custom
  replicas: {replicas}
  custom: {{command: "serve --port {{{{ port }}}} {flag}", healthPath: /}}
"""


def converged(replicas: int, flag: str) -> ObservedState:
    observed = ObservedState.of([worker("a"), worker("b")])
    d = desired(web(replicas, flag), CLUSTER)
    return apply(run(d, observed), observed)


def with_state(observed: ObservedState, instance_id: str, state: str) -> ObservedState:
    workers = []
    for w in observed.workers:
        instances = [
            i.model_copy(update={"state": state, "message": "exit 1"}) if i.id == instance_id else i
            for i in w.instances
        ]
        workers.append(w.model_copy(update={"instances": instances}))
    return ObservedState.of(workers)


def changing(plan: Plan) -> list[tuple[str, str]]:
    return [(a.action, a.instance.id) for a in plan.changes]


def test_one_replica_at_a_time_then_the_next() -> None:
    observed = converged(3, "--old")
    d = desired(web(3, "--new"), CLUSTER)
    raw = run(d, observed)
    assert len(raw.changes) == 3  # the planner alone would replace every replica at once
    paced, rollouts = pace(raw, observed)
    assert changing(paced) == [("replace", "web-0")]
    assert {a.instance.id for a in paced.actions if a.action == "keep"} == {"web-1", "web-2"}
    assert rollouts[0].state == "Progressing"
    # web-0 runs the new spec but is still Starting: nothing else moves.
    stepped = with_state(apply(paced, observed), "web-0", "Starting")
    paced2, rollouts2 = pace(run(d, stepped), stepped)
    assert changing(paced2) == []
    assert "waits for web-0" in rollouts2[0].message
    # Running: the next replica goes.
    ready = with_state(stepped, "web-0", "Running")
    paced3, _ = pace(run(d, ready), ready)
    assert changing(paced3) == [("replace", "web-1")]


def test_a_new_instance_in_error_stops_the_rollout() -> None:
    observed = converged(2, "--old")
    d = desired(web(2, "--broken"), CLUSTER)
    first, _ = pace(run(d, observed), observed)
    failed = with_state(apply(first, observed), "web-0", "Error")
    paced, rollouts = pace(run(d, failed), failed)
    assert changing(paced) == []
    old = next(a for a in paced.actions if a.instance.id == "web-1")
    assert old.action == "keep" and "--old" in old.instance.argv
    assert rollouts[0].state == "Stalled" and "web-0 is in Error" in rollouts[0].message


def test_new_replicas_and_unchanged_models_are_not_paced() -> None:
    observed = converged(1, "--same")
    d = desired(web(3, "--same"), CLUSTER)
    paced, rollouts = pace(run(d, observed), observed)
    assert changing(paced) == [("create", "web-1"), ("create", "web-2")]
    assert rollouts == ()


def test_kept_instances_keep_their_old_spec_in_the_sets() -> None:
    observed = converged(2, "--old")
    paced, _ = pace(run(desired(web(2, "--new"), CLUSTER), observed), observed)
    sets = paced.desired_sets()
    argv = {s.id: s.argv for specs in sets.values() for s in specs}
    assert "--new" in argv["web-0"] and "--old" in argv["web-1"]
    assert all(not isinstance(s, ObservedInstance) for specs in sets.values() for s in specs)


def test_a_surge_replica_serves_while_each_old_one_is_replaced() -> None:
    observed = converged(2, "--old")
    d = desired(web(2, "--new"), CLUSTER)
    assert surge(d, run(d, observed), observed) == {"web"}
    paced, rollouts = pace(run(widen(d, {"web"}), observed), observed)
    assert changing(paced) == [("create", "web-2")]  # the surge first, nothing replaced yet
    assert "web-2" in rollouts[0].message
    step = apply(paced, observed)  # every instance reported Running
    for replaced in ("web-0", "web-1"):
        assert surge(d, run(d, step), step) == {"web"}
        paced, _ = pace(run(widen(d, {"web"}), step), step)
        assert changing(paced) == [("replace", replaced)]
        step = apply(paced, step)
    assert surge(d, run(d, step), step) == set()
    assert changing(run(d, step)) == [("delete", "web-2")]  # the rollout is over: the surge goes


def test_the_surge_stays_until_the_last_new_replica_runs() -> None:
    observed = converged(1, "--old")
    d = desired(web(1, "--new"), CLUSTER)
    step = apply(pace(run(widen(d, {"web"}), observed), observed)[0], observed)
    step = with_state(apply(pace(run(widen(d, {"web"}), step), step)[0], step), "web-0", "Starting")
    assert surge(d, run(d, step), step) == {"web"}
    assert changing(pace(run(widen(d, {"web"}), step), step)[0]) == []

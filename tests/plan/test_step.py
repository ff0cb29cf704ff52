"""Paced rollouts as data: desired, what the agents report -> the next step (plan.step)."""

from __future__ import annotations

from reconciler.observe import ObservedInstance, ObservedState
from reconciler.plan import Plan, to_data, to_text
from reconciler.spec import Desired
from tests.plan.helpers import apply, desired, run, step, worker

CLUSTER = """
apiVersion: reconciler/v1
kind: Cluster
metadata: {name: test}
spec:
  agents: [{name: a, url: "http://a"}, {name: b, url: "http://b"}]
"""


def web(replicas: int, flag: str, surge: int = 1, unavailable: int = 0) -> str:
    return f"""
apiVersion: reconciler/v1
kind: Model
metadata: {{name: web}}
spec:
  source: {{localPath: /bin/sh}}
  backend: custom
  replicas: {replicas}
  maxSurge: {surge}
  maxUnavailable: {unavailable}
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


def roll(d: Desired, observed: ObservedState, states: dict[str, str] | None = None) -> tuple[Plan, ObservedState]:
    """One step, and what the agents report once they converged to it (``states`` overrides)."""
    result = step(d, observed)
    after = apply(result, observed)
    for instance_id, state in (states or {}).items():
        after = with_state(after, instance_id, state)
    return result, after


def test_without_room_to_surge_one_replica_at_a_time_in_place() -> None:
    observed = converged(3, "--old")
    d = desired(web(3, "--new", surge=0), CLUSTER)
    assert len(run(d, observed).changes) == 3  # the planner alone would replace every replica at once
    first, stepped = roll(d, observed, {"web-0": "Starting"})
    assert changing(first) == [("replace", "web-0")]
    assert {a.instance.id for a in first.actions if a.action == "keep"} == {"web-1", "web-2"}
    assert first.rollouts[0].state == "Progressing"
    assert first.rollouts[0].summary() == "step 1 of 3: replace 1, keep 2 old"
    # web-0 runs the new spec but is still Starting: nothing else moves.
    waiting = step(d, stepped)
    assert changing(waiting) == []
    assert "waits for web-0" in waiting.rollouts[0].message
    assert waiting.rollouts[0].step == 1
    # Running: the next replica goes.
    ready = with_state(stepped, "web-0", "Running")
    nxt = step(d, ready)
    assert changing(nxt) == [("replace", "web-1")]
    assert nxt.rollouts[0].summary() == "step 2 of 3: replace 1, keep 1 old"


def test_a_new_instance_in_error_stops_the_rollout() -> None:
    observed = converged(2, "--old")
    d = desired(web(2, "--broken", surge=0), CLUSTER)
    _, failed = roll(d, observed, {"web-0": "Error"})
    paced = step(d, failed)
    assert changing(paced) == []
    old = next(a for a in paced.actions if a.instance.id == "web-1")
    assert old.action == "keep" and "--old" in old.instance.argv
    assert paced.rollouts[0].state == "Stalled" and "web-0 is in Error" in paced.rollouts[0].message


def test_a_failed_surge_replica_stops_the_rollout_too() -> None:
    observed = converged(2, "--old")
    d = desired(web(2, "--broken"), CLUSTER)
    _, failed = roll(d, observed, {"web-2": "Error"})
    paced = step(d, failed)
    assert changing(paced) == []
    assert paced.rollouts[0].state == "Stalled" and "web-2 is in Error" in paced.rollouts[0].message


def test_new_replicas_and_unchanged_models_are_not_paced() -> None:
    observed = converged(1, "--same")
    paced = step(desired(web(3, "--same"), CLUSTER), observed)
    assert changing(paced) == [("create", "web-1"), ("create", "web-2")]
    assert paced.rollouts == ()


def test_changing_only_the_pace_restarts_nothing() -> None:
    observed = converged(2, "--same")
    assert not step(desired(web(2, "--same", surge=3, unavailable=2), CLUSTER), observed).has_changes


def test_kept_instances_keep_their_old_spec_in_the_sets() -> None:
    observed = converged(2, "--old")
    paced = step(desired(web(2, "--new", surge=0), CLUSTER), observed)
    sets = paced.desired_sets()
    argv = {s.id: s.argv for specs in sets.values() for s in specs}
    assert "--new" in argv["web-0"] and "--old" in argv["web-1"]
    assert all(not isinstance(s, ObservedInstance) for specs in sets.values() for s in specs)


def test_a_surge_replica_serves_while_each_old_one_is_replaced() -> None:
    observed = converged(2, "--old")
    d = desired(web(2, "--new"), CLUSTER)
    first, after = roll(d, observed)  # every instance reported Running
    assert changing(first) == [("create", "web-2")]  # the surge first, nothing replaced yet
    assert [a.surge for a in first.actions if a.instance.id == "web-2"] == [True]
    assert first.rollouts[0].summary() == "step 1 of 3: surge 1 new, keep 2 old"
    assert "web-2" in first.rollouts[0].message
    for number, replaced in ((2, "web-0"), (3, "web-1")):
        paced, after = roll(d, after)
        assert changing(paced) == [("replace", replaced)]
        assert (paced.rollouts[0].step, paced.rollouts[0].of) == (number, 3)
    last = step(d, after)
    assert changing(last) == [("delete", "web-2")]  # the rollout is over: the surge goes
    assert last.rollouts == ()


def test_the_surge_stays_until_the_last_new_replica_runs() -> None:
    observed = converged(1, "--old")
    d = desired(web(1, "--new"), CLUSTER)
    _, after = roll(d, observed)
    _, after = roll(d, after, {"web-0": "Starting"})
    assert changing(step(d, after)) == []


def test_max_surge_two_and_one_unavailable_move_three_at_a_time() -> None:
    observed = converged(6, "--old")
    d = desired(web(6, "--new", surge=2, unavailable=1), CLUSTER)
    first, after = roll(d, observed, {"web-6": "Starting", "web-7": "Starting"})
    # One may go down at once, while the two surge replicas start.
    assert changing(first) == [("replace", "web-0"), ("create", "web-6"), ("create", "web-7")]
    assert first.rollouts[0].summary() == "step 1 of 3: surge 2 new, replace 1, keep 5 old"
    ready = with_state(with_state(after, "web-6", "Running"), "web-7", "Running")
    second = step(d, ready)
    assert changing(second) == [("replace", "web-1"), ("replace", "web-2"), ("replace", "web-3")]
    after = apply(second, ready)
    third = step(d, after)
    assert changing(third) == [("replace", "web-4"), ("replace", "web-5")]
    assert changing(step(d, apply(third, after))) == [("delete", "web-6"), ("delete", "web-7")]


def test_an_old_replica_that_does_not_run_is_replaced_at_once() -> None:
    observed = with_state(converged(3, "--old"), "web-2", "Error")
    paced = step(desired(web(3, "--new", surge=0), CLUSTER), observed)
    # web-2 serves nothing: it goes at once; web-0 waits until web-2 runs (none may go down).
    assert changing(paced) == [("replace", "web-2")]


def test_the_step_in_json_and_text() -> None:
    observed = converged(2, "--old")
    paced = step(desired(web(2, "--new"), CLUSTER), observed)
    body = to_data(paced)
    surge = next(a for a in body["actions"] if a["instance"] == "web-2")
    assert (surge["surge"], surge["step"], surge["of"]) == (True, 1, 3)
    assert body["rollouts"] == [
        {
            "model": "web",
            "state": "Progressing",
            "step": 1,
            "of": 3,
            "summary": "step 1 of 3: surge 1 new, keep 2 old",
            "message": paced.rollouts[0].message,
        }
    ]
    assert "Rollout web: step 1 of 3: surge 1 new, keep 2 old" in to_text(paced)

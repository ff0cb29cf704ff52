"""Instance ports in the plan: one port space per IP, a worker's own range, overlaps refused,
and a kept instance whose port was taken moves to a free port of its worker."""

from __future__ import annotations

from typing import Any

from reconciler.observe import ObservedInstance, ObservedState
from reconciler.plan import Plan
from tests.plan.helpers import apply, desired, run, worker

WEB = """
apiVersion: reconciler/v1
kind: Model
metadata: {{name: web}}
spec:
  source: {{localPath: /bin/sh}}
  backend: custom
  replicas: {replicas}
  custom: {{command: "srv {{{{ port }}}}", healthPath: /}}
"""
PLACED = ("create", "replace")


def two_workers(**extra: dict[str, Any]) -> ObservedState:
    return ObservedState.of(
        [worker(name, ip=extra.get(name, {}).get("ip", "10.0.0.1"), **_rest(extra.get(name, {}))) for name in "ab"]
    )


def _rest(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != "ip"}


def placed_ports(result: Plan) -> dict[str, int]:
    return {a.worker: a.instance.port for a in result.actions if a.action in PLACED}


def test_workers_on_one_ip_share_a_port_space() -> None:
    result = run(desired(WEB.format(replicas=2)), two_workers())
    assert sorted(placed_ports(result).values()) == [40000, 40001]


def test_workers_on_two_ips_each_start_at_the_low_end() -> None:
    result = run(desired(WEB.format(replicas=2)), two_workers(b={"ip": "10.0.0.2"}))
    assert placed_ports(result) == {"a": 40000, "b": 40000}


def test_a_workers_own_range_wins_over_the_clusters() -> None:
    observed = two_workers(a={"portRange": "41000-41009"}, b={"ip": "10.0.0.2"})
    assert placed_ports(run(desired(WEB.format(replicas=2)), observed)) == {"a": 41000, "b": 40000}


def test_a_full_range_names_the_worker_and_the_range() -> None:
    observed = ObservedState.of([worker("a", ip="10.0.0.1", portRange="41000-41000")])
    result = run(desired(WEB.format(replicas=2)), observed)
    assert [p.reason for p in result.pending] == ["no free port on worker a in 41000-41000 (its agent's --port-range)"]


def test_overlapping_ranges_on_one_ip_are_refused_naming_both_workers() -> None:
    observed = two_workers(a={"portRange": "41000-41009"}, b={"portRange": "41005-41020"})
    result = run(desired(WEB.format(replicas=1)), observed)
    assert [a.action for a in result.actions] == []
    [pending] = result.pending
    assert pending.reason == (
        "port range 41000-41009 of worker a overlaps 41005-41020 of worker b on 10.0.0.1; "
        "give each agent on a host its own --port-range"
    )
    apart = two_workers(a={"portRange": "41000-41009"}, b={"portRange": "41010-41020"})
    assert not run(desired(WEB.format(replicas=1)), apart).pending


def _running(replicas: int, observed: ObservedState) -> ObservedState:
    d = desired(WEB.format(replicas=replicas))
    return apply(run(d, observed), observed)


def _with(observed: ObservedState, name: str, **fields: Any) -> ObservedState:
    return ObservedState.of([w.model_copy(update=fields) if w.name == name else w for w in observed.workers])


def _instance(observed: ObservedState, name: str) -> ObservedInstance:
    return next(w for w in observed.workers if w.name == name).instances[0]


def test_a_port_held_by_a_foreign_process_moves_the_instance_on_its_worker() -> None:
    observed = _running(1, ObservedState.of([worker("a", ip="10.0.0.1")]))
    port = _instance(observed, "a").port
    assert [a.action for a in run(desired(WEB.format(replicas=1)), observed).actions] == ["keep"]
    taken = _with(observed, "a", ports_in_use=[port], port_holders={port: "pid 4709 (nc)"})
    [action] = run(desired(WEB.format(replicas=1)), taken).actions
    assert (action.action, action.worker, action.reason) == ("replace", "a", f"port {port} taken by pid 4709 (nc)")
    assert action.instance.port != port


def test_a_start_that_failed_on_port_in_use_moves_the_instance() -> None:
    observed = _running(1, ObservedState.of([worker("a", ip="10.0.0.1")]))
    old = _instance(observed, "a")
    failed = old.model_copy(
        update={"state": "Error", "message": f"cannot start: port {old.port} is in use by pid 9 (python3)"}
    )
    broken = _with(observed, "a", instances=[failed])
    [action] = run(desired(WEB.format(replicas=1)), broken).actions
    assert (action.action, action.reason) == ("replace", f"port {old.port} taken by pid 9 (python3)")
    assert action.instance.port != old.port


def test_two_replicas_given_one_port_on_one_host_are_parted() -> None:
    """The state the old per-worker allocator left: both on 40000; b's agent sees a's listener."""
    observed = _running(2, two_workers(b={"ip": "10.0.0.2"}))
    same_host = ObservedState.of([w.model_copy(update={"ip": "10.0.0.1"}) for w in observed.workers])
    clash = _with(same_host, "b", ports_in_use=[40000], port_holders={40000: "pid 11 (srv)"})
    actions = run(desired(WEB.format(replicas=2)), clash).actions
    assert sorted((a.action, a.worker, a.instance.port) for a in actions) == [
        ("keep", "a", 40000),
        ("replace", "b", 40001),
    ]

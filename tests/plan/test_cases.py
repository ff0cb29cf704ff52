"""Golden cases: manifests + a recorded snapshot -> the expected plan (tests/plan/cases/*.yaml).

A case has ``description``, ``snapshot`` (a file in examples/snapshots) or ``observed`` (a
snapshot as text; an instance's ``modelHash: current`` stands for the hash its model has now),
``manifests`` (text) or ``manifestsPath``, an optional ``cluster`` (text; else a default
Cluster), and ``expect``: the ``summary``, actions matched by ``instance`` on the keys given,
pending replicas whose reason holds every ``reasonContains`` part and no ``reasonExcludes``
part, and ``rollouts`` matched by ``model`` on the keys given. Every case is planned as the
next step (``plan.step``), as ``plan``, ``apply`` and the server take it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler.observe import ObservedState, load_snapshot
from reconciler.plan import to_data
from reconciler.spec import Desired, load_desired
from tests.conftest import ROOT
from tests.plan.helpers import desired, run, snapshot, step

CASES = sorted((Path(__file__).parent / "cases").glob("*.yaml"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path):
    case = YAML(typ="safe").load(path.read_text())
    if "manifestsPath" in case:
        state = load_desired(ROOT / case["manifestsPath"])
    else:
        state = desired(case["manifests"], *([case["cluster"]] if "cluster" in case else []))
    body = to_data(step(state, observed(case, state)))
    expect = case["expect"]
    assert body["summary"] == expect["summary"]
    for wanted in expect.get("actions", []):
        matches = [a for a in body["actions"] if a["instance"] == wanted["instance"]]
        assert matches, f"no action for {wanted['instance']}"
        assert {k: matches[0][k] for k in wanted} == wanted
    for wanted in expect.get("pending", []):
        found = [p for p in body["pending"] if (p["model"], p["replica"]) == (wanted["model"], wanted["replica"])]
        assert found, f"{wanted['model']} replica {wanted['replica']} is not pending"
        contains = wanted["reasonContains"]
        for part in [contains] if isinstance(contains, str) else contains:
            assert part in found[0]["reason"]
        for part in wanted.get("reasonExcludes", []):
            assert part not in found[0]["reason"]
    for wanted in expect.get("rollouts", []):
        found = [r for r in body["rollouts"] if r["model"] == wanted["model"]]
        assert found, f"{wanted['model']} is in no rollout"
        assert {k: found[0][k] for k in wanted} == wanted
    if "rollouts" in expect and not expect["rollouts"]:
        assert body["rollouts"] == []


def observed(case: dict, state: Desired) -> ObservedState:
    if "snapshot" in case:
        return snapshot(case["snapshot"])
    text = case["observed"]
    if "modelHash: current" in text:
        empty = load_text(text.replace("modelHash: current", "modelHash: x"))
        bare = ObservedState.of([w.model_copy(update={"instances": []}) for w in empty.workers])
        hashes = {a.instance.model: a.instance.model_hash for a in run(state, bare).actions}
        for model, value in hashes.items():
            text = text.replace(f"model: {model}, modelHash: current", f"model: {model}, modelHash: {value}")
    return load_text(text)


def load_text(text: str) -> ObservedState:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "observed.yaml"
        path.write_text(text)
        return load_snapshot(path)

"""Golden cases: manifests + a recorded snapshot -> the expected plan (tests/plan/cases/*.yaml).

A case has ``description``, ``snapshot`` (a file in examples/snapshots), ``manifests`` (text) or
``manifestsPath``, an optional ``cluster`` (text; else a default Cluster), and ``expect``: the
``summary``, actions matched by ``instance`` on the keys given, and pending replicas whose
reason holds every ``reasonContains`` part and no ``reasonExcludes`` part.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler.plan import to_data
from reconciler.spec import load_desired
from tests.conftest import ROOT
from tests.plan.helpers import desired, run, snapshot

CASES = sorted((Path(__file__).parent / "cases").glob("*.yaml"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path):
    case = YAML(typ="safe").load(path.read_text())
    if "manifestsPath" in case:
        state = load_desired(ROOT / case["manifestsPath"])
    else:
        state = desired(case["manifests"], *([case["cluster"]] if "cluster" in case else []))
    body = to_data(run(state, snapshot(case["snapshot"])))
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

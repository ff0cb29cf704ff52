"""Measured memory beside the claim, and the event and gauge when an instance outgrows it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.simulated import SimulatedAgents
from reconciler.observe import ObservedInstance
from reconciler.server.loop import Reconciler
from reconciler.server.memory import measured_of, over_claim
from reconciler.server.store import Store, default_url
from reconciler.source import DirSource
from tests.server.test_hosting import MODEL

GIB = 1024**3


def instance(claim_ram: int, measured_ram: int | None, claim_vram: int = 0, measured_vram: int = 0) -> ObservedInstance:
    return ObservedInstance.model_validate(
        {
            "id": "m-0",
            "model": "m",
            "claim": {"ram": claim_ram, "vram": {0: claim_vram} if claim_vram else {}},
            "measuredRam": measured_ram,
            "measuredVram": {0: measured_vram} if measured_vram else {},
        }
    )


def test_over_claim_only_above_ten_percent() -> None:
    assert over_claim(instance(GIB, int(1.10 * GIB))) is None
    assert over_claim(instance(GIB, None)) is None
    assert over_claim(instance(0, 5 * GIB)) is None  # nothing claimed: nothing to compare with
    assert over_claim(instance(GIB, int(1.25 * GIB))) == "RAM 1.25 GiB measured, 25% above its claim of 1.00 GiB"
    vram = over_claim(instance(GIB, GIB, 2 * GIB, 3 * GIB))
    assert vram == "VRAM 3.00 GiB measured, 50% above its claim of 2.00 GiB"
    assert measured_of(instance(GIB, 2 * GIB, GIB, GIB)) == {"ram": 2 * GIB, "vram": {"0": GIB}}
    assert measured_of(instance(GIB, None)) is None


def test_an_instance_over_its_claim_is_one_event_and_a_gauge(tmp_path: Path) -> None:
    agents = SimulatedAgents(["a"]).start()
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "cluster.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: t}\n"
        f"spec:\n  agents: [{{name: a, url: '{agents.url('a')}'}}]\n  sync: {{interval: 1h}}\n"
    )
    (folder / "web.yaml").write_text(MODEL.format(replicas=1))
    store = Store(default_url(tmp_path))
    rec = Reconciler(DirSource(folder), store, None)
    try:
        asyncio.run(rec.reconcile_once())
        (spec,) = agents.agents["a"].instances
        claim = GIB  # a custom backend claims nothing; the agent reports what it was handed
        spec["claim"] = {"ram": claim, "vram": {}}
        spec["measuredRam"] = claim * 2
        asyncio.run(rec.reconcile_once())
        asyncio.run(rec.reconcile_once())  # still over: no second event
        (row,) = rec.status()["instances"]
        assert row["measured"] == {"ram": claim * 2, "vram": {}}
        events = [e for e in store.events() if e["reason"] == "OverClaim"]
        assert len(events) == 1 and events[0]["object"] == "instance/web-0" and "100% above" in events[0]["message"]
        assert b"reconciler_instances_over_claim 1.0" in rec.metrics.render()
        spec["measuredRam"] = claim
        asyncio.run(rec.reconcile_once())
        assert b"reconciler_instances_over_claim 0.0" in rec.metrics.render()
    finally:
        agents.stop()
        store.close()

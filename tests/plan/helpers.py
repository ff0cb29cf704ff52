"""Build desired states, facts and observed states for planning tests; simulate an apply."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path
from typing import Any

import httpx

from reconciler.estimate import ModelMetadata, gather, load_catalog
from reconciler.observe import ObservedInstance, ObservedState, Worker, load_snapshot
from reconciler.plan import Facts, Plan, plan
from reconciler.plan import step as next_step
from reconciler.spec import Desired, load_desired
from tests.conftest import ROOT

SNAPSHOTS = ROOT / "examples" / "snapshots"
CLOSED_HUB = "http://127.0.0.1:9"  # nothing listens: a model missing from the catalog fails at once
CATALOG = load_catalog(SNAPSHOTS / "catalog.yaml")
CLUSTER = """
apiVersion: reconciler/v1
kind: Cluster
metadata: {name: test}
"""


def desired(text: str, cluster: str = CLUSTER) -> Desired:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "cluster.yaml").write_text(textwrap.dedent(cluster))
        (Path(folder) / "models.yaml").write_text(textwrap.dedent(text))
        return load_desired(folder)


def snapshot(name: str) -> ObservedState:
    return load_snapshot(SNAPSHOTS / name)


def facts(*extra: ModelMetadata) -> Facts:
    return Facts({**CATALOG, **{m.source: m for m in extra}})


def safetensors(source: str, weight_gib: float, heads: int, max_len: int = 32768) -> ModelMetadata:
    return ModelMetadata(
        source=source,
        format="safetensors",
        weight_bytes=int(weight_gib * 1024**3),
        architectures=["LlamaForCausalLM"],
        attention_heads=heads,
        max_position_embeddings=max_len,
    )


def worker(name: str, ram_gib: float = 64, gpus: list[float] = (), **extra: Any) -> Worker:
    return Worker.model_validate(
        {
            "name": name,
            "ip": f"10.0.0.{abs(hash(name)) % 200 + 1}",
            "memoryTotal": f"{ram_gib}GiB",
            "gpus": [{"index": i, "memoryTotal": f"{g}GiB", "name": "GPU"} for i, g in enumerate(gpus)],
            **extra,
        }
    )


def apply(result: Plan, observed: ObservedState) -> ObservedState:
    """What the agents would report after converging to the plan."""
    sets = result.desired_sets()
    workers = []
    for w in observed.workers:
        instances = [
            ObservedInstance.model_validate({**s.model_dump(), "state": "Running"}) for s in sets.get(w.name, [])
        ]
        untouched = [i for i in w.instances if w.name not in sets]
        workers.append(w.model_copy(update={"instances": instances or untouched}))
    return ObservedState.of(workers)


def gathered(d: Desired, observed: ObservedState, extra: Facts) -> Facts:
    """Facts as the CLI gathers them: recorded ones first, then the agents' reports and local files."""
    with httpx.Client() as client:
        found, failed = gather(d.models, observed, extra.metadata, client, CLOSED_HUB)
    return Facts(found, failed)


def run(d: Desired, observed: ObservedState, f: Facts | None = None) -> Plan:
    return plan(d, observed, {}, gathered(d, observed, f or facts()))


def step(d: Desired, observed: ObservedState, f: Facts | None = None) -> Plan:
    """The next step, as ``plan``, ``apply`` and the server take it."""
    return next_step(d, observed, {}, gathered(d, observed, f or facts()))

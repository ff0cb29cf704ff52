"""Properties of plan() over random clusters and model sets."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.observe import GIB, ObservedState, Worker
from reconciler.plan import Facts, plan, to_json
from reconciler.spec import Cluster, Desired, Metadata, Model
from tests.plan.helpers import CATALOG, apply

FACTS = Facts(CATALOG)
CLUSTER = Cluster(metadata=Metadata(name="prop"))
SOURCES = [
    ({"huggingface": {"repo": "Qwen/Qwen3-0.6B"}}, "vllm", {}),
    ({"huggingface": {"repo": "Qwen/Qwen2.5-32B-Instruct"}}, "vllm", {}),
    ({"huggingface": {"repo": "meta-llama/Llama-3.1-8B-Instruct"}}, "sglang", {}),
    ({"huggingface": {"repo": "BAAI/bge-m3"}}, "vllm", {"category": "embedding"}),
    (
        {"huggingface": {"repo": "bartowski/Mistral-7B-Instruct-v0.3-GGUF", "file": "*Q4_K_M.gguf"}},
        "llama-box",
        {"cpuOffloading": True},
    ),
    (
        {"huggingface": {"repo": "bartowski/Mistral-7B-Instruct-v0.3-GGUF", "file": "*Q4_K_M.gguf"}},
        "llama-box",
        {"cpuOffloading": False},
    ),
    (
        {"huggingface": {"repo": "gpustack/bge-reranker-v2-m3-GGUF", "file": "bge-reranker-v2-m3-Q8_0.gguf"}},
        "llama-box",
        {"category": "reranker"},
    ),
    ({"huggingface": {"repo": "Systran/faster-whisper-large-v3"}}, "vox-box", {"category": "speech-to-text"}),
]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def workers(draw: st.DrawFn) -> ObservedState:
    count = draw(st.integers(1, 5))
    found = []
    for index in range(count):
        gpus = draw(st.lists(st.sampled_from([8, 16, 24, 48, 80]), max_size=8))
        found.append(
            Worker.model_validate(
                {
                    "name": f"w{index}",
                    "ip": f"10.0.0.{index + 1}",
                    "memoryTotal": draw(st.sampled_from([8, 32, 128, 512])) * GIB,
                    "cpuCount": 8,
                    "labels": {"zone": draw(st.sampled_from(["a", "b"]))},
                    "gpus": [{"index": i, "memoryTotal": g * GIB} for i, g in enumerate(gpus)],
                }
            )
        )
    return ObservedState.of(found)


def model(name: str, choice: int, replicas: int, placement: str) -> Model:
    source, backend, extra = SOURCES[choice]
    return Model.model_validate(
        {
            "apiVersion": "reconciler/v1",
            "kind": "Model",
            "metadata": {"name": name},
            "spec": {
                "source": source,
                "backend": backend,
                "replicas": replicas,
                "scheduling": {"placement": placement},
                **extra,
            },
        }
    )


@st.composite
def models(draw: st.DrawFn, prefix: str = "m", max_size: int = 5) -> tuple[Model, ...]:
    count = draw(st.integers(1, max_size))
    return tuple(
        model(
            f"{prefix}{i}",
            draw(st.integers(0, len(SOURCES) - 1)),
            draw(st.integers(0, 3)),
            draw(st.sampled_from(["spread", "binpack"])),
        )
        for i in range(count)
    )


def state(found: tuple[Model, ...]) -> Desired:
    return Desired(root="prop", cluster=CLUSTER, models=tuple(sorted(found, key=lambda m: m.metadata.name)))


@SETTINGS
@given(workers(), models())
def test_determinism(observed, found):
    first = to_json(plan(state(found), observed, {}, FACTS))
    assert to_json(plan(state(found), observed, {}, FACTS)) == first


@SETTINGS
@given(workers(), models())
def test_idempotence(observed, found):
    desired = state(found)
    after = apply(plan(desired, observed, {}, FACTS), observed)
    again = plan(desired, after, {}, FACTS)
    assert not again.has_changes, [(a.action, a.instance.id, a.reason) for a in again.changes]


@SETTINGS
@given(workers(), models())
def test_capacity_is_never_exceeded(observed, found):
    after = apply(plan(state(found), observed, {}, FACTS), observed)
    reserved = CLUSTER.spec.reserved
    for worker in after.workers:
        assert sum(i.claim.ram for i in worker.instances) <= worker.memory_total - reserved.ram_gib * GIB
        vram = Counter()
        for instance in worker.instances:
            vram.update(instance.claim.vram)
        for gpu in worker.gpus:
            assert vram[gpu.index] <= gpu.memory_total - reserved.vram_gib * GIB


@SETTINGS
@given(workers(), models(), models(prefix="new", max_size=3))
def test_adding_models_never_moves_existing_ones(observed, found, added):
    after = apply(plan(state(found), observed, {}, FACTS), observed)
    result = plan(state(found + added), after, {}, FACTS)
    for action in result.actions:
        if not action.instance.model.startswith("new"):
            assert action.action == "keep", (action.action, action.instance.id, action.reason)

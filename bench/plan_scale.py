"""Plan a synthetic cluster of 1,000 workers x 8 GPUs and 2,000 models (5,000 replicas).

Prints the full-plan seconds, the no-op re-plan seconds (after applying the first
plan) and the peak RSS. Targets on a 2-core machine: < 2 s, < 0.2 s, < 500 MB.

    python bench/plan_scale.py [--workers 1000] [--models 2000]
"""

from __future__ import annotations

import argparse
import gc
import resource
import time

from reconciler.estimate import ModelMetadata
from reconciler.observe import GIB, GGUFFacts, ObservedInstance, ObservedState, Worker
from reconciler.plan import Facts, Plan, plan
from reconciler.spec import Cluster, Desired, Metadata, Model, WorkerSelector

ZONES = ("a", "b", "c", "d")


def cluster_workers(count: int) -> list[Worker]:
    return [
        Worker.model_validate(
            {
                "name": f"worker-{i:04d}",
                "ip": f"10.{i // 250}.{i % 250}.1",
                "memoryTotal": 1024 * GIB,
                "cpuCount": 64,
                "labels": {"zone": ZONES[i % len(ZONES)]},
                "gpus": [{"index": g, "name": "H100", "memoryTotal": 80 * GIB} for g in range(8)],
            }
        )
        for i in range(count)
    ]


def catalog() -> dict[str, ModelMetadata]:
    entries = {}
    for size in (1, 4, 8, 14, 20, 30):
        source = f"hf:org/model-{size}b"
        entries[source] = ModelMetadata(
            source=source,
            format="safetensors",
            weight_bytes=size * 2 * GIB,
            architectures=["LlamaForCausalLM"],
            attention_heads=32,
            max_position_embeddings=32768,
        )
    facts = GGUFFacts(
        architecture="llama",
        block_count=32,
        embedding_length=4096,
        head_count=32,
        head_count_kv=8,
        key_length=128,
        value_length=128,
        context_length=32768,
        vocab_size=32000,
        layer_bytes=[130_000_000] * 32,
        output_bytes=110_000_000,
        embedding_bytes=75_000_000,
    )
    entries["hf:org/gguf-7b/model.gguf"] = ModelMetadata(
        source="hf:org/gguf-7b/model.gguf", format="gguf", file="model.gguf", weight_bytes=4_350_000_000, gguf=facts
    )
    return entries


def models(count: int) -> list[Model]:
    found = []
    sizes = (1, 4, 8, 14, 20, 30)  # about 5,750 of the 8,000 GPUs
    for i in range(count):
        replicas = 3 if i < count // 2 else 2  # 2,000 models -> 5,000 replicas
        if i % 10 == 0:
            source = {"huggingface": {"repo": "org/gguf-7b", "file": "model.gguf"}}
            backend = "llama-box"
        else:
            source = {"huggingface": {"repo": f"org/model-{sizes[i % len(sizes)]}b"}}
            backend = "vllm"
        found.append(
            Model.model_validate(
                {
                    "apiVersion": "reconciler/v1",
                    "kind": "Model",
                    "metadata": {"name": f"model-{i:04d}"},
                    "spec": {
                        "source": source,
                        "backend": backend,
                        "replicas": replicas,
                        "scheduling": {
                            "workerSelector": f"zone-{ZONES[i % len(ZONES)]}",
                            "placement": "binpack" if i % 3 == 0 else "spread",
                        },
                    },
                }
            )
        )
    return found


def selectors() -> tuple[WorkerSelector, ...]:
    return tuple(
        WorkerSelector.model_validate(
            {
                "apiVersion": "reconciler/v1",
                "kind": "WorkerSelector",
                "metadata": {"name": f"zone-{z}"},
                "spec": {"matchLabels": {"zone": z}},
            }
        )
        for z in ZONES
    )


def applied(result: Plan, observed: ObservedState) -> ObservedState:
    sets = result.desired_sets()
    return ObservedState.of(
        [
            w.model_copy(
                update={
                    "instances": [ObservedInstance(**s.model_dump(), state="Running") for s in sets.get(w.name, [])]
                }
            )
            for w in observed.workers
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--models", type=int, default=2000)
    args = parser.parse_args()
    observed = ObservedState.of(cluster_workers(args.workers))
    cluster = Cluster(metadata=Metadata(name="bench"), spec={"portRange": "40000-40999"})
    desired = Desired(root="bench", cluster=cluster, selectors=selectors(), models=tuple(models(args.models)))
    facts = Facts(catalog())
    replicas = sum(m.spec.replicas for m in desired.models)

    gc.collect()  # each timed plan starts without garbage left by building the bench's inputs
    started = time.perf_counter()
    first = plan(desired, observed, {}, facts)
    full = time.perf_counter() - started
    after = applied(first, observed)
    gc.collect()
    started = time.perf_counter()
    again = plan(desired, after, {}, facts)
    noop = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"cluster: {args.workers} workers x 8 GPUs, {args.models} models, {replicas} replicas")
    print(f"full plan: {full:.3f} s ({first.count('create')} creates, {len(first.pending)} pending)  target < 2 s")
    print(f"no-op re-plan: {noop:.3f} s ({again.count('keep')} kept, {len(again.changes)} changes)  target < 0.2 s")
    print(f"peak RSS: {peak_mb:.0f} MB  target < 500 MB")


if __name__ == "__main__":
    main()
